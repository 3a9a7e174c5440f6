"""The answers to pipelined SFTP writes (exportmon/deliver/sftp_writes.py), read from a
scripted channel: split, merged and out-of-order answers, refusals, a closed channel.
The uploads themselves run against the real OpenSSH server in test_sftp.py."""

from __future__ import annotations

import errno
import io
import struct

import pytest

from exportmon.deliver.sftp_writes import FIRST_ID, write_stream


def status(request_id: int, code: int = 0, text: str = "") -> bytes:
    message = text.encode()
    body = struct.pack(">BII", 101, request_id, code) + struct.pack(">I", len(message)) + message
    body += struct.pack(">I", 0)  # language tag
    return struct.pack(">I", len(body)) + body


class ScriptedChannel:
    """A channel that records what is sent and answers each WRITE as ``answer`` says:
    ``answer(request_id, offset, data) -> bytes`` queued for ``recv``, which hands them
    out ``chunk`` bytes at a time (answers split and merged across reads)."""

    def __init__(self, answer, *, chunk: int = 7) -> None:
        self.answer = answer
        self.chunk = chunk
        self.received = bytearray()
        self.queued = bytearray()
        self.written: dict[int, bytes] = {}
        self.closed = False

    def sendall(self, packet: bytes) -> None:
        length, kind, request_id = struct.unpack_from(">IBI", packet)
        assert (length + 4, kind) == (len(packet), 6)
        (handle_length,) = struct.unpack_from(">I", packet, 9)
        at = 13 + handle_length
        offset, size = struct.unpack_from(">QI", packet, at)
        data = packet[at + 12 :]
        assert len(data) == size
        self.written[offset] = data
        self.queued += self.answer(request_id, offset, data)

    def recv_ready(self) -> bool:
        return bool(self.queued)

    def recv(self, size: int) -> bytes:
        if not self.queued:
            if self.closed:
                return b""
            raise AssertionError("recv would wait for ever: no answer is due")
        part = bytes(self.queued[: min(size, self.chunk)])
        del self.queued[: len(part)]
        return part


def upload(channel: ScriptedChannel, data: bytes, **options) -> int:
    options.setdefault("request", 1000)
    options.setdefault("block", 4096)
    return write_stream(channel, b"handle-1", io.BytesIO(data), **options)


def test_every_byte_is_written_once_at_its_offset():
    data = bytes(range(256)) * 40 + b"odd end"
    channel = ScriptedChannel(lambda request_id, offset, part: status(request_id))
    assert upload(channel, data) == len(data)
    assert b"".join(channel.written[offset] for offset in sorted(channel.written)) == data
    assert max(map(len, channel.written.values())) == 1000


def test_answers_held_back_and_given_out_of_order_are_all_counted():
    held: list[bytes] = []

    def answer(request_id, offset, part):
        held.append(status(request_id))
        if len(held) < 3:
            return b""
        batch = b"".join(reversed(held))
        held.clear()
        return batch

    # 9 requests of 1000 bytes, answered three at a time, newest first; the third
    # request overfills the pipe, so the writer must wait for those answers.
    channel = ScriptedChannel(answer, chunk=5)
    assert upload(channel, b"x" * 9000, block=3000, in_flight=2500) == 9000
    assert not held and not channel.queued


def test_the_first_refusal_is_raised_once_the_answers_due_are_read():
    def answer(request_id, offset, part):
        if offset >= 3000:
            return status(request_id, 4, "Failure")
        return status(request_id)

    channel = ScriptedChannel(answer)
    with pytest.raises(OSError, match=r"could not write \(Failure\); a full disk"):
        upload(channel, b"y" * 20000, block=2000)
    assert not channel.queued  # every answer was read
    assert max(channel.written) < 20000 - 1000  # and the rest was not sent in vain


@pytest.mark.parametrize(
    ("code", "kind", "number"),
    [(3, PermissionError, errno.EACCES), (2, FileNotFoundError, errno.ENOENT)],
)
def test_refusals_keep_the_errno_paramiko_gives_them(code, kind, number):
    channel = ScriptedChannel(lambda request_id, offset, part: status(request_id, code, "no"))
    with pytest.raises(kind) as caught:
        upload(channel, b"z" * 10)
    assert caught.value.errno == number


def test_a_closed_channel_is_an_eof_error():
    channel = ScriptedChannel(lambda request_id, offset, part: b"")
    channel.closed = True
    with pytest.raises(EOFError, match="closed the SFTP session"):
        upload(channel, b"z" * 5000)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda request_id: status(request_id + 1), "which was not sent"),
        (lambda request_id: struct.pack(">IBI", 5, 103, request_id), "message type 103"),
    ],
)
def test_an_answer_that_fits_no_request_is_an_error(answer, message):
    channel = ScriptedChannel(lambda request_id, offset, part: answer(request_id))
    channel.closed = True
    with pytest.raises(OSError, match=message):
        upload(channel, b"z" * 10)


def test_request_ids_stay_out_of_paramikos_range():
    seen = []
    channel = ScriptedChannel(
        lambda request_id, offset, part: seen.append(request_id) or status(request_id)
    )
    upload(channel, b"q" * 3500)
    assert seen == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2, FIRST_ID + 3]


def test_an_answer_announced_too_large_is_refused_not_buffered():
    huge = struct.pack(">I", 2**31) + b"\x65"

    channel = ScriptedChannel(lambda request_id, offset, part: huge)
    with pytest.raises(OSError, match="announced an answer of 2147483648 bytes"):
        upload(channel, b"z" * 10)


def test_the_servers_words_are_made_printable():
    channel = ScriptedChannel(
        lambda request_id, offset, part: status(request_id, 4, "disk\x1b[31m full\nreally")
    )
    with pytest.raises(OSError) as caught:
        upload(channel, b"z" * 10)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)
