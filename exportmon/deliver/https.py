"""HTTPS destinations: each file sent by ``POST`` or ``PUT`` to a receiving system.

A ``[[deliver]]`` entry with an ``https://`` (or ``http://``) ``url`` sends every file
as one request:

* ``method`` ``POST`` (default) or ``PUT``; ``body = "raw"`` sends the file itself
  (``Content-Type: text/csv`` for ``.csv`` files, else
  ``application/octet-stream``, unless ``headers`` sets one), ``body =
  "multipart"`` a ``multipart/form-data`` form with the file in the field
  ``multipart_field`` (default ``file``) under its own name. Both stream from disk
  with a ``Content-Length``: a file is never read into memory whole.
* ``url`` (and ``status_url``) may hold ``{type}`` (the file's export type,
  ``person`` for ``5-1-person.csv``) and ``{name}`` (its file name), URL-encoded.
* ``headers`` are sent with every request; ``user`` with ``password``,
  ``password_env`` or ``password_command`` gives basic authentication, ``token`` (or
  ``token_env``/``token_command``) a bearer token. Secrets never reach a log line.
* TLS is verified (``ca_file`` adds a private CA). The host of ``url`` and of
  ``status_url`` is trusted as written, private addresses included: the user named
  it, unlike a link in a mail. A redirect is followed only as ``307``/``308``
  (which repeat the method and the body), at most five times, never from https to
  http, and to another host only when that host passes the address guard of
  :mod:`exportmon.net.http` (no private, loopback or metadata addresses);
  ``Authorization`` is not sent to another origin. A ``301``/``302``/``303`` would
  turn the upload into a ``GET`` and is a failure.
* A ``2xx`` answer is success. Any other is a failure in one line with the status
  and the start of the answer's body. ``5xx``, ``408``, ``429`` and connection
  failures are tried again (``retries``, the project's back-off, ``Retry-After``
  honoured); other ``4xx`` are not, and are not retried by later runs either
  (until ``run --retry-failed``).
* ``reference`` takes the receiving system's processing reference from the answer:
  a regular expression with a group ``(?P<ref>...)`` searched in the body, or a JSON
  pointer (``/data/id``) into a JSON answer. With ``status_url`` the delivery is
  recorded *submitted* with that reference, and its status is polled later
  (:mod:`exportmon.actions.status_tracking`). An answer without a reference fails
  the delivery when ``status_url`` needs ``{reference}`` (not retried: the file was
  taken), and is a WARNING otherwise.

**Idempotency.** Every upload carries an ``Idempotency-Key`` header derived from the
ledger's delivery record and the file's SHA-256 (:func:`idempotency_key`). The
delivery is recorded before the first byte is sent; when a process dies after the
receiving system accepted the file but before its answer (the reference) was
recorded, the next run sends the same file again *with the same key*, and logs a
WARNING saying so. A system that honours the header answers the repeat as it
answered the first request. **A system that ignores it receives the file twice**
and processes it twice: with Blackboard's SIS flat files that is a second data set
(a second reference code) with the same records, which ``store`` and ``refresh``
operations apply again with the same result, and the first data set, whose
reference exportmon never learnt, goes untracked. A delivery whose answer was
recorded is never sent again. Without a ledger (``push-ftp`` outside a monitor's
folder) each upload gets a random key.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
import secrets as random_tokens
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from exportmon import json_answers
from exportmon.deliver import Outgoing, Placed, check_overwrite
from exportmon.errors import ConfigError, DeliveryError, ExportmonError, LinkRefused
from exportmon.files.names import export_type
from exportmon.log import get_logger, printable
from exportmon.net import retry
from exportmon.net.http import HttpSettings, Response, display_url, request
from exportmon.progress import ProgressFactory, start_task
from exportmon.signals import checkpoint

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver.urls import DestinationURL
    from exportmon.ledger import Delivery

log = get_logger(__name__)

#: Statuses tried again within one delivery (besides every 5xx).
RETRIED_STATUSES = frozenset({408, 429})
#: How much of an answer's body is read (for the reference and error lines).
ANSWER_LIMIT = 64 * 1024
#: How much of an error answer's body goes into the one-line error.
ERROR_BODY_CHARS = 160
#: Redirects followed (307/308 only).
MAX_REDIRECTS = 5
#: Bytes per block read from disk while sending.
BLOCK = 256 * 1024


def label_of(url: DestinationURL) -> str:
    """The ledger name of the HTTPS destination at ``url``: the URL as written, without
    credentials (``{type}`` and ``{name}`` left in), known without opening it."""
    return f"{url.kind}://{url.netloc}{url.path or '/'}{url.query}"


def idempotency_key(label: str, target: str, delivery_id: int, sha256: str | None) -> str:
    """The ``Idempotency-Key`` of one delivery: the same for every attempt of that
    delivery record (so a resend after a crash repeats it), different for any other
    file, target, destination or delivery."""
    digest = hashlib.sha256(
        "\0".join(("exportmon", label, target, str(delivery_id), sha256 or "")).encode()
    ).hexdigest()
    return f"exportmon-{digest[:40]}"


def expand(template: str, *, type: str | None, name: str) -> str:
    """``template`` with ``{type}`` and ``{name}`` filled in (URL-encoded); other
    braces are left as written."""
    values = {"type": quote(type or "", safe=""), "name": quote(name, safe="")}
    return re.sub(r"\{(type|name)\}", lambda match: values[match.group(1)], template)


def file_type(item: Outgoing) -> str | None:
    """The export type of ``item``: as recorded, else from its name."""
    return item.type or export_type(item.name)


class _Stream:
    """Parts (bytes, or a file on disk) read one after the other as one body.

    Seekable to its start, so a ``307``/``308`` or a retry can send it again;
    :meth:`read` calls :func:`~exportmon.signals.checkpoint` and reports progress.
    """

    def __init__(self, parts: Sequence[bytes | Path], advance: Any = None) -> None:
        self.parts = list(parts)
        self.length = sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in self.parts)
        self._advance = advance
        self._index = 0
        self._offset = 0
        self._file: IO[bytes] | None = None
        self._position = 0

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = 0) -> int:
        if position != 0 or whence != 0:
            raise OSError("only a seek to the start is supported")
        self._close_file()
        self._index = self._offset = self._position = 0
        return 0

    def read(self, size: int = -1) -> bytes:
        checkpoint()
        size = BLOCK if size < 0 else size
        while self._index < len(self.parts):
            part = self.parts[self._index]
            if isinstance(part, bytes):
                chunk = part[self._offset : self._offset + size]
                self._offset += len(chunk)
            else:
                if self._file is None:
                    self._file = part.open("rb")
                chunk = self._file.read(size)
            if chunk:
                self._position += len(chunk)
                if self._advance is not None:
                    self._advance(len(chunk))
                return chunk
            self._close_file()
            self._index += 1
            self._offset = 0
        return b""

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close_file()


def _multipart_header(value: str) -> str:
    """A value for a quoted ``Content-Disposition`` parameter (RFC 7578: quotes and
    line breaks percent-encoded)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class HttpsDestination:
    """Sends files to a receiving system by HTTPS; see the module docstring.

    ``label`` is the URL as configured (placeholders kept, no credentials), so every
    file of this entry is recorded under one destination.
    """

    kind = "https"

    def __init__(
        self,
        config: DestinationConfig,
        url: DestinationURL,
        *,
        password: str | None = None,
        token: str | None = None,
    ) -> None:
        self.config = config
        self.template = label_of(url)
        self.label = self.template
        self.display = display_url(self.template)
        self.overwrite = check_overwrite(config.overwrite)
        self.method = config.method
        self.status_url = config.status_url
        hosts = [url.host]
        if config.status_url:
            host = urlsplit(config.status_url).hostname
            if host:
                hosts.append(host)
        self.settings = HttpSettings(
            ca_file=config.ca_file,
            ca_key=config.key + "ca_file",
            allow_hosts=tuple(hosts),
            allow_key=config.key + "url",
            action="upload to",
            timeout=config.timeout or 60.0,
        )
        self.policy = retry.RetryPolicy(retries=config.retries)
        self._auth: dict[str, str] = {}
        user = config.user or url.user
        if token:
            self._auth["Authorization"] = f"Bearer {token}"
        elif password is not None or user:
            pair = f"{user or ''}:{password or ''}".encode()
            self._auth["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._delivery_id: int | None = None
        self._interrupted = False

    # --- the Destination interface ------------------------------------------------

    def exists(self, target: str) -> bool:
        """Always False: a receiving system is not asked what it holds."""
        return False

    def holds(self, target: str, size: int, sha256: str | None) -> bool:
        """Always False: an upload whose answer was not recorded is sent again (with
        the same ``Idempotency-Key``, see the module docstring)."""
        return False

    def location(self, target: str) -> str:
        name = PurePosixPath(target).name
        return display_url(expand(self.template, type=export_type(name), name=name))

    def bind_delivery(self, delivery: Delivery | None, *, interrupted: bool = False) -> None:
        """The ledger record the next :meth:`put` belongs to (its id goes into the
        ``Idempotency-Key``); ``interrupted``: an earlier attempt of it was cut short
        after it may have reached the server."""
        self._delivery_id = delivery.id if delivery is not None else None
        self._interrupted = interrupted

    def put(
        self, item: Outgoing, target: str, *, progress: ProgressFactory | None = None
    ) -> Placed:
        """Send ``item`` under ``target``'s name; :class:`DeliveryError` in one line when
        the receiving system does not take it (after the retries)."""
        name = PurePosixPath(target).name
        kind = file_type(item)
        if kind is None and "{type}" in self.template:
            raise DeliveryError(
                f"cannot tell the export type of {name} for {{type}} in {self.display}",
                hint="{type} is taken from names such as 5-1-person.csv",
                retryable=False,
            )
        url = expand(self.template, type=kind, name=name)
        if self._delivery_id is not None:
            key = idempotency_key(self.label, target, self._delivery_id, item.sha256)
        else:
            key = f"exportmon-{uuid.uuid4().hex}"
        if self._interrupted:
            log.warning(
                "sending %s to %s again after an interrupted upload that may have reached"
                " it, with the same Idempotency-Key %s: a receiving system that ignores the"
                " key processes it twice",
                name,
                display_url(url),
                key,
            )
        headers = {**self.config.headers, **self._auth, "Idempotency-Key": key}
        advance, finished = start_task(progress, f"upload {name}", item.bytes)
        stream = self._body(item, name, headers, advance)
        headers["Content-Length"] = str(stream.length)
        try:
            body = self._send(url, headers, stream, name)
        finally:
            stream.close()
            finished()
            self._delivery_id, self._interrupted = None, False
        reference = None
        if self.config.reference:
            reference = extract_reference(self.config.reference, body)
            missing = (
                f"{display_url(url)} took {name} but its answer holds no reference"
                f" ({self.config.key}reference): {_body_start(body)}"
            )
            if reference is None and "{reference}" in (self.status_url or ""):
                # Without it the status cannot be asked for: a person must look.
                raise DeliveryError(
                    missing, hint="check the reference pattern against the answer", retryable=False
                )
            if reference is None:
                log.warning("%s", missing)
            else:
                log.info("%s took %s: reference %s", self.display, name, reference)
        return Placed(
            target=target,
            location=display_url(url),
            bytes=item.bytes,
            reference=reference,
            submitted=bool(self.status_url),
        )

    def close(self) -> None:
        """Nothing to close: each request has its own connection."""

    def __enter__(self) -> HttpsDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- status --------------------------------------------------------------------

    def status_address(self, reference: str | None, item_name: str) -> str:
        """The ``status_url`` of a delivery: ``{reference}``, ``{type}`` and ``{name}``
        filled in."""
        template = (self.status_url or "").replace("{reference}", quote(reference or "", safe=""))
        return expand(template, type=export_type(item_name), name=PurePosixPath(item_name).name)

    def fetch_status(self, url: str) -> bytes:
        """The body of a ``GET`` of ``url`` (a ``status_url``), with this destination's
        headers, authentication and TLS, retried like uploads; :class:`DeliveryError`
        for an answer that is not ``2xx``."""
        headers = {**self.config.headers, **self._auth}
        return self._send(url, headers, None, "the status", method="GET")

    # --- the exchange ----------------------------------------------------------------

    def _body(self, item: Outgoing, name: str, headers: dict[str, str], advance: Any) -> _Stream:
        given = {k.lower() for k in headers}
        if self.config.body == "multipart":
            boundary = "exportmon-" + random_tokens.token_hex(16)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if name.lower().endswith(".csv"):
                kind = "text/csv"
            field = _multipart_header(self.config.multipart_field)
            head = (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{field}";'
                f' filename="{_multipart_header(name)}"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            return _Stream([head, item.source, tail], advance)
        if "content-type" not in given:
            csv = name.lower().endswith(".csv")
            headers["Content-Type"] = "text/csv" if csv else "application/octet-stream"
        return _Stream([item.source], advance)

    def _send(
        self,
        url: str,
        headers: Mapping[str, str],
        stream: _Stream | None,
        what: str,
        *,
        method: str | None = None,
    ) -> bytes:
        """One exchange, retried by :attr:`policy`; the answer's body (bounded)."""
        method = method or self.method

        def attempt() -> bytes:
            if stream is not None:
                stream.seek(0)
            try:
                response = self._follow(method, url, dict(headers), stream)
            except LinkRefused as exc:
                raise DeliveryError(exc.message, hint=exc.hint, retryable=False) from None
            except ExportmonError as exc:
                if not exc.retryable:
                    raise
                raise retry.TryAgain(exc.one_line()) from None
            with response:
                body = response.read(ANSWER_LIMIT)
                status = response.status
                if 200 <= status < 300:
                    return body
                line = (
                    f"{display_url(response.url)} answered {status} {response.reason}"
                    f" to {method} {what}: {_body_start(body)}"
                )
                if status >= 500 or status in RETRIED_STATUSES:
                    raise retry.TryAgain(
                        line, retry_after=retry.parse_retry_after(response.header("Retry-After"))
                    )
                raise DeliveryError(line, hint=_hint(status, self.config.key), retryable=False)

        def give_up(failure: retry.TryAgain, attempts: int) -> DeliveryError:
            return DeliveryError(
                f"{failure.message} (after {attempts} attempt{'s' if attempts != 1 else ''})"
            )

        def on_retry(failure: retry.TryAgain, attempts: int, pause: float) -> None:
            log.info("%s; trying again in %.0f s", failure.message, pause)

        return retry.call(attempt, self.policy, give_up=give_up, on_retry=on_retry)

    def _follow(
        self, method: str, url: str, headers: dict[str, str], stream: _Stream | None
    ) -> Response:
        """``request`` following only ``307``/``308`` (method and body repeated)."""
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            response = request(
                method,
                current,
                headers=headers,
                body=stream,  # type: ignore[arg-type]
                settings=self.settings,
                follow_redirects=False,
                deadline=time.monotonic() + 6 * self.settings.timeout if stream is None else None,
            )
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.header("Location")
            status = response.status
            response.close()
            if status not in (307, 308):
                raise DeliveryError(
                    f"{display_url(current)} answered {status} to {method}: a redirect that"
                    " would drop the upload",
                    hint=f"set {self.config.key}url to the address it redirects to"
                    f" ({display_url(location or '?')})",
                    retryable=False,
                )
            if not location:
                raise DeliveryError(
                    f"{display_url(current)} answered {status} without a Location",
                    retryable=False,
                )
            following = urljoin(current, location.strip())
            if urlsplit(current).scheme == "https" and urlsplit(following).scheme != "https":
                raise DeliveryError(
                    f"refused a redirect from https to {display_url(following)}",
                    retryable=False,
                )
            if _origin(following) != _origin(current):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if stream is not None:
                stream.seek(0)
            current = following
        raise DeliveryError(
            f"more than {MAX_REDIRECTS} redirects from {display_url(url)}", retryable=False
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _hint(status: int, key: str) -> str | None:
    if status in (401, 403):
        return f"check {key}user and the password or token"
    if status in (404, 405):
        return f"check {key}url and {key}method"
    if status == 413:
        return "the receiving system refuses a file this large"
    return None


def _body_start(body: bytes) -> str:
    """The start of an answer's body for a one-line message: whitespace collapsed,
    control characters escaped, shortened."""
    text = " ".join(body[: ERROR_BODY_CHARS * 4].decode("utf-8", "replace").split())
    return printable(text, ERROR_BODY_CHARS) if text else "(empty answer)"


def extract_reference(pattern: str, body: bytes) -> str | None:
    """The reference in an answer: by a JSON pointer (``pattern`` starts with ``/``)
    or by the group ``ref`` of a regular expression; None when it is not there."""
    if pattern.startswith("/"):
        try:
            value: Any = json_answers.loads(body)
        except ValueError:
            return None
        for token in pattern[1:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        found = str(value)
    else:
        match = re.search(pattern, body.decode("utf-8", "replace"))
        if match is None or match.group("ref") is None:
            return None
        found = match.group("ref")
    found = found.strip()
    if not found or len(found) > 200 or printable(found) != found:
        return None
    return found


def check_reference(pattern: str) -> str | None:
    """What is wrong with a ``reference`` option, or None."""
    if pattern.startswith("/"):
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    if "ref" not in compiled.groupindex:
        return "the regular expression needs a group (?P<ref>...)"
    return None


def open_destination(config: DestinationConfig, url: DestinationURL) -> HttpsDestination:
    """The HTTPS destination of a ``[[deliver]]`` entry; its secrets are resolved here."""
    from exportmon.hooks.credentials import resolve

    if "{reference}" in (config.status_url or "") and config.reference is None:
        raise ConfigError(
            "uses {reference} but reference is not set",
            key=config.key + "status_url",
            hint="set reference to a pattern with (?P<ref>...) or a JSON pointer",
        )
    token_source = config.token_source()
    password_source = config.password_source()
    return HttpsDestination(
        config,
        url,
        password=resolve(password_source) if password_source.configured else None,
        token=resolve(token_source, cache=False) if token_source.configured else None,
    )
