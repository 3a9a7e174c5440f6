"""Streaming a local file into an open SFTP file handle: many WRITE requests in flight.

paramiko's own pipelined ``SFTPFile.write`` sends 32 KiB requests and, once more than
100 are unanswered, waits for *every* answer before sending again, so the server
idles while the pipe drains. :func:`write_stream` sends the requests itself, straight
on the SFTP channel:

* each request carries as much as the server accepts (``limits@openssh.com``,
  :func:`write_size`: 255 KiB on OpenSSH), so there are fewer answers to read and
  fewer writes for the server to make;
* up to :data:`IN_FLIGHT` bytes are unanswered at any time; answers that have
  arrived are read after each request without waiting, and only a full pipe waits,
  for the oldest answer alone;
* every answer is checked: after the first refusal (permission denied, disk full)
  nothing more is sent, and it is raised as an :class:`OSError` once the answers
  still due have been read.

The requests use ids from :data:`FIRST_ID` up, a range paramiko's own counter (from 1)
does not reach. On success every answer has been read; after a failure the caller
closes the connection (:mod:`exportmon.deliver.reconnect` does), so no stray answer
ever reaches paramiko.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from exportmon.log import printable

#: SSH_FXP_WRITE and SSH_FXP_STATUS, and the status codes (draft-ietf-secsh-filexfer-02).
_WRITE, _STATUS = 6, 101
_OK, _EOF, _NO_SUCH_FILE, _PERMISSION_DENIED, _FAILURE = 0, 1, 2, 3, 4
#: The extension that tells the largest requests the server takes (OpenSSH 8.6 and later).
LIMITS = "limits@openssh.com"
#: The largest data in one request, whatever the server allows: 255 KiB is OpenSSH's
#: own limit, and more gains nothing once a request spans several channel packets.
MAX_WRITE = 261120
#: Unanswered bytes at most: beyond what the SSH window (2 MiB on OpenSSH) lets through,
#: so the window, not this, limits a fast server.
IN_FLIGHT = 8 * 1024 * 1024
#: The first request id used here.
FIRST_ID = 0x80000000
#: How much of the channel is read at once when answers are due.
_READ = 65536
#: The longest answer taken: a STATUS is a few dozen bytes, and a server announcing
#: more must not make the client buffer it.
MAX_ANSWER = 64 * 1024
#: The longest handle a server may give (draft-ietf-secsh-filexfer-02: 256 bytes).
MAX_HANDLE = 256
#: The most a WRITE request holds besides its data: length, type, id, handle,
#: offset, data length.
MAX_HEADER = 4 + 1 + 4 + 4 + MAX_HANDLE + 8 + 4


def write_size(sftp: Any, extensions: frozenset[str]) -> int:
    """The data one WRITE request carries to this server (asked once per connection).

    With ``limits@openssh.com`` the server's own maximum (capped at :data:`MAX_WRITE`);
    where the server names no maximum (0, or no such extension), what fits in one SSH
    channel packet (about 32 KiB: the size every server must accept, and what
    OpenSSH's own client then sends), so no request goes out as a full packet and a
    tiny one.
    """
    if LIMITS in extensions:
        limits = _limits(sftp)
        if limits is not None:
            max_packet, _read, max_write = limits
            room = (max_packet - MAX_HEADER) if max_packet else MAX_WRITE
            size = min(max_write, room, MAX_WRITE)
            if max_write and size >= 1024:
                return size
    channel = sftp.get_channel()
    # paramiko keeps 64 bytes of each channel packet free for the message around it.
    room = int(getattr(channel, "out_max_packet_size", 32768)) - 64 - MAX_HEADER
    return max(1024, min(32768, room))


def _limits(sftp: Any) -> tuple[int, int, int] | None:
    """The server's maximum packet, read and write lengths, or ``None`` if it will not say."""
    from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

    try:
        kind, message = sftp._request(CMD_EXTENDED, LIMITS)
    except OSError:  # refused: the server keeps its limits to itself
        return None
    if kind != CMD_EXTENDED_REPLY:
        return None
    return message.get_int64(), message.get_int64(), message.get_int64()


def write_stream(
    channel: Any,
    handle: bytes,
    local: BinaryIO,
    *,
    request: int,
    block: int,
    after_block: Callable[[int], None] | None = None,
    in_flight: int = IN_FLIGHT,
) -> int:
    """Write all of ``local`` (from where it stands) to the open ``handle`` from offset 0;
    return the bytes written, once the server has acknowledged every request.

    ``local`` is read ``block`` bytes at a time; ``after_block(n)`` runs after each
    block's requests are sent (progress, stop checks). Raises :class:`OSError` for the
    first request the server refused, :class:`EOFError` when the channel closes.
    """
    handle_field = struct.pack(">I", len(handle)) + handle
    fixed = 1 + 4 + len(handle_field) + 8 + 4
    due = _Answers(channel)
    offset = 0
    request_id = FIRST_ID
    while not due.refused() and (chunk := local.read(block)):
        view = memoryview(chunk)
        for start in range(0, len(view), request):
            part = view[start : start + request]
            length = len(part)
            channel.sendall(
                struct.pack(">IBI", fixed + length, _WRITE, request_id)
                + handle_field
                + struct.pack(">QI", offset, length)
                + part
            )
            due.expect(request_id, length)
            request_id = FIRST_ID + (request_id + 1 - FIRST_ID) % FIRST_ID
            offset += length
            due.read_arrived()
            while due.bytes > in_flight:
                due.read_more()
            if due.refused():
                break  # the rest would be refused too (disk full, no permission)
        if after_block is not None:
            after_block(len(chunk))
    while due.pending:
        due.read_more()
    if due.refusal is not None:
        raise due.refusal
    return offset


class _Answers:
    """The WRITE requests not yet answered, and the answers read so far."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.pending: dict[int, int] = {}
        self.bytes = 0
        self.refusal: OSError | None = None
        self._buffer = bytearray()

    def expect(self, request_id: int, length: int) -> None:
        self.pending[request_id] = length
        self.bytes += length

    def refused(self) -> bool:
        """Whether the server has refused a request (the upload cannot succeed)."""
        return self.refusal is not None

    def read_arrived(self) -> None:
        """Take in the answers already received, without waiting."""
        while self.pending and self.channel.recv_ready():
            self.read_more()

    def read_more(self) -> None:
        """Wait for more of the answers due and take in those complete."""
        data = self.channel.recv(_READ)
        if not data:
            raise EOFError("the server closed the SFTP session during the upload")
        self._buffer += data
        self._take()

    def _take(self) -> None:
        buffer, at = self._buffer, 0
        while len(buffer) - at >= 4:
            (length,) = struct.unpack_from(">I", buffer, at)
            if length > MAX_ANSWER:
                raise OSError(f"the server announced an answer of {length} bytes to a write")
            if len(buffer) - at - 4 < length:
                break
            body = bytes(buffer[at + 4 : at + 4 + length])
            at += 4 + length
            self._answer(body)
        del buffer[:at]

    def _answer(self, body: bytes) -> None:
        if len(body) < 9 or body[0] != _STATUS:
            kind = body[0] if body else "none"
            raise OSError(f"the server answered a write with SFTP message type {kind}")
        request_id, code = struct.unpack_from(">II", body, 1)
        length = self.pending.pop(request_id, None)
        if length is None:
            raise OSError(f"the server answered request {request_id}, which was not sent")
        self.bytes -= length
        if code != _OK and self.refusal is None:
            self.refusal = _refusal(code, _status_text(body[9:]))


def _status_text(rest: bytes) -> str:
    """The message string of a STATUS answer's tail (``string message, string lang``)."""
    if len(rest) < 4:
        return ""
    (length,) = struct.unpack_from(">I", rest)
    return printable(rest[4 : 4 + min(length, 200)].decode("utf-8", "replace"))


def _refusal(code: int, text: str) -> OSError:
    """The :class:`OSError` paramiko raises for the same status, with errno where one fits."""
    if code == _NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text or "No such file")
    if code == _PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text or "Permission denied")
    if code == _FAILURE:
        # Protocol version 3 has no code for a full disk or a quota: OpenSSH says
        # "Failure" for ENOSPC, EDQUOT, EFBIG and EIO alike.
        reason = text or "Failure"
        return OSError(
            f"the server could not write ({reason}); a full disk or a quota is the usual cause"
        )
    if code == _EOF:
        return OSError(f"end of file: {text}")
    return OSError(text or f"SFTP status {code}")
