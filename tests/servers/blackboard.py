"""A local Blackboard Learn SIS flat-file endpoint, plus a plain upload endpoint.

:class:`BlackboardServer` serves over HTTPS (the trusted test CA's certificate):

* ``POST /webapps/bb-data-integration-flatfile-BBLEARN/endpoint/<type>/<operation>``
  with basic authentication (:attr:`user`, :attr:`password`) takes the body as a
  feed file and answers ``Success: Feed File Uploaded. Use the reference code <32
  hex> to track these records in the logs.`` with a fresh reference (a data set);
  wrong credentials get ``401``. With :attr:`honour_idempotency` an upload repeating
  an ``Idempotency-Key`` gets the first answer again and makes no new data set.
* ``GET .../endpoint/dataSetStatus/<reference>`` answers the ``<dataSetStatus>``
  XML. A data set starts with :attr:`queued` records queued; each poll moves
  :attr:`step` of them on (to completed, or — as :attr:`errors` and
  :attr:`warnings` say — counted as errors or warnings once the queue is empty).
  :attr:`never_complete` keeps them queued for ever; :attr:`status_failures` answers
  that many polls with ``500``; :attr:`hold_status` (an Event, when set by a test)
  makes a poll wait until it is set, so a test can kill the client mid-poll.
* ``/upload/...`` (any method) records the request and answers ``201`` with a
  JSON body ``{"data": {"id": "<hex>"}}``; ``/answer/<status>`` answers that status
  with a body; ``/redirect?to=<url>`` answers ``307`` to ``<url>``.

:attr:`requests` counts requests per kind (``store``, ``status``, ``upload``...);
:attr:`uploads` holds every ``store``/``upload`` request (method, path, headers,
body) in order; :meth:`posts_of` counts the store requests of one file name.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from servers import LOCALHOST
from servers.https import QuietHandler, start_https, stop_https
from servers.tlsca import ServerCert

BASE = "/webapps/bb-data-integration-flatfile-BBLEARN/endpoint"
SUCCESS = (
    "Success: Feed File Uploaded. Use the reference code {ref} to track these records in the logs."
)


@dataclass
class Upload:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class DataSet:
    reference: str
    type: str
    body: bytes
    queued: int
    completed: int = 0
    errors: int = 0
    warnings: int = 0
    polls: int = 0
    keys: list[str] = field(default_factory=list)


class BlackboardServer:
    """See the module docstring."""

    def __init__(
        self, cert: ServerCert, user: str = "integration", password: str = "s3cret-pw!"
    ) -> None:
        self.cert = cert
        self.user = user
        self.password = password
        self.queued = 3
        self.step = 1
        self.errors = 0
        self.warnings = 0
        self.never_complete = False
        self.status_failures = 0
        #: Answers given to the next status polls instead of the real status (hostile
        #: or broken ones), one per poll.
        self.odd_status: list[bytes] = []
        self.store_failures: list[int] = []
        self.honour_idempotency = False
        self.hold_status: threading.Event | None = None
        self.status_waiting = threading.Event()
        self.requests: Counter[str] = Counter()
        self.uploads: list[Upload] = []
        self.data_sets: dict[str, DataSet] = {}
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"https://{LOCALHOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:PORT/webapps/.../endpoint``."""
        return self.origin + BASE

    def posts_of(self, name_part: str) -> int:
        """How many store requests carried a body holding ``name_part`` (bytes as text)."""
        return sum(
            1
            for upload in self.uploads
            if upload.path.startswith(BASE) and name_part.encode() in upload.body
        )

    def start(self) -> None:
        self._server = start_https(_handler(self), self.cert, "Blackboard test server")

    def stop(self) -> None:
        if self.hold_status is not None:
            self.hold_status.set()
        stop_https(self._server)
        self._server = None

    # --- the protocol --------------------------------------------------------------

    def store(self, kind: str, body: bytes, key: str | None) -> str:
        with self._lock:
            if self.honour_idempotency and key and key in self._by_key:
                return self._by_key[key]
            reference = secrets.token_hex(16)
            data_set = DataSet(reference, kind, body, queued=self.queued)
            if key:
                data_set.keys.append(key)
                self._by_key[key] = reference
            self.data_sets[reference] = data_set
            return reference

    def status_xml(self, reference: str) -> str | None:
        with self._lock:
            data_set = self.data_sets.get(reference)
            if data_set is None:
                return None
            data_set.polls += 1
            if not self.never_complete and data_set.queued:
                moved = min(self.step, data_set.queued)
                data_set.queued -= moved
                data_set.completed += moved
                if data_set.queued == 0:
                    data_set.errors = min(self.errors, data_set.completed)
                    data_set.completed -= data_set.errors
                    data_set.warnings = self.warnings
            return (
                "<dataSetStatus>\n"
                f"    <completedCount>{data_set.completed}</completedCount>\n"
                '    <dataIntegrationId type="blackboard.platform.dataintegration.'
                'DataIntegration">_123_1</dataIntegrationId>\n'
                f"    <dataSetUid>{reference}</dataSetUid>\n"
                f"    <errorCount>{data_set.errors}</errorCount>\n"
                "    <lastEntryDate>2013-03-20T10:45:48-05:00</lastEntryDate>\n"
                f"    <queuedCount>{data_set.queued}</queuedCount>\n"
                "    <startDate>2013-03-20T10:45:48-05:00</startDate>\n"
                f"    <warningCount>{data_set.warnings}</warningCount>\n"
                "</dataSetStatus>\n"
            )

    def authorised(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"


def _handler(server: BlackboardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _answer(
            self,
            status: int,
            body: str | bytes,
            content_type: str = "text/plain",
            headers: dict[str, str] | None = None,
        ) -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            try:
                self.end_headers()
                self.wfile.write(data)
            except (OSError, ssl.SSLError):
                self.close_connection = True  # the client went away (killed by a test)

        def _body(self) -> bytes | None:
            """The request body; None when the client went away before sending it all."""
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                self.close_connection = True
                return None
            return body

        def _record(self, body: bytes) -> None:
            with server._lock:
                server.uploads.append(
                    Upload(self.command, self.path, dict(self.headers.items()), body)
                )

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith(BASE + "/dataSetStatus/"):
                server.requests["status"] += 1
                if not server.authorised(self.headers.get("Authorization")):
                    self._answer(401, "Unauthorized")
                    return
                if server.hold_status is not None:
                    server.status_waiting.set()
                    server.hold_status.wait(30)
                with server._lock:
                    failing = server.status_failures > 0
                    server.status_failures -= failing
                if failing:
                    self._answer(500, "<html><body>Internal Server Error\x1b[31m</body></html>")
                    return
                with server._lock:
                    odd = server.odd_status.pop(0) if server.odd_status else None
                if odd is not None:
                    self._answer(200, odd.decode("latin-1"), "application/json")
                    return
                found = server.status_xml(path.rsplit("/", 1)[1])
                if found is None:
                    self._answer(404, "Not Found: no such data set")
                    return
                self._answer(200, found, "application/xml")
                return
            self._other(b"")

        def do_POST(self) -> None:
            body = self._body()
            if body is None:
                return
            path = urlsplit(self.path).path
            if path.startswith(BASE + "/"):
                server.requests["store"] += 1
                self._record(body)
                if not server.authorised(self.headers.get("Authorization")):
                    self._answer(401, "Unauthorized: bad credentials")
                    return
                with server._lock:
                    failure = server.store_failures.pop(0) if server.store_failures else None
                if failure is not None:
                    self._answer(
                        failure, f"Error {failure}: try later", headers={"Retry-After": "0"}
                    )
                    return
                kind = path[len(BASE) + 1 :].split("/")[0]
                reference = server.store(kind, body, self.headers.get("Idempotency-Key"))
                self._answer(200, SUCCESS.format(ref=reference))
                return
            self._other(body)

        def do_PUT(self) -> None:
            body = self._body()
            if body is not None:
                self._other(body)

        def _other(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            if parts.path.startswith("/upload"):
                server.requests["upload"] += 1
                self._record(body)
                self._answer(
                    201,
                    json.dumps({"data": {"id": secrets.token_hex(8), "state": "accepted"}}),
                    "application/json",
                )
            elif parts.path.startswith("/answer/"):
                server.requests["answer"] += 1
                status = int(parts.path.rsplit("/", 1)[1])
                self._answer(status, "Bad request:\n the file\tis refused " + "x" * 500)
            elif parts.path.startswith("/redirect"):
                server.requests["redirect"] += 1
                target = parse_qs(parts.query)["to"][0]
                code = int(parse_qs(parts.query).get("code", ["307"])[0])
                self._answer(code, "", headers={"Location": target})
            else:
                self._answer(404, "Not Found")

    return Handler
