"""A local Microsoft Graph mail API: the endpoints exportmon's Graph source uses.

:class:`GraphServer` serves, over HTTPS under ``/v1.0``, for the mailboxes loaded
with :meth:`GraphServer.add_message`:

* ``GET users/{user}/mailFolders/{id-or-well-known-name}`` and
  ``GET users/{user}/mailFolders[/{id}/childFolders]?$filter=displayName eq '...'``;
  ``POST users/{user}/mailFolders`` creates a top-level folder;
* ``GET users/{user}/mailFolders/{id}/messages/delta`` — the delta query: the first
  round lists the folder's messages page by page (``Prefer: odata.maxpagesize``,
  ``@odata.nextLink``) and ends with an ``@odata.deltaLink``; a round from that link
  lists only what was added to or removed from the folder since (``@removed``). An
  expired delta token (:meth:`expire_delta_tokens`) answers ``410 Gone``;
* ``GET users/{user}/messages/{id}`` (``$select=internetMessageHeaders``) and
  ``GET users/{user}/messages/{id}/$value`` (the MIME message, streamed);
* ``POST users/{user}/messages/{id}/move`` with ``destinationId``. Message ids are
  immutable (as with ``Prefer: IdType="ImmutableId"``): a move keeps the id.

Every request needs ``Authorization: Bearer <token>`` that the given
:class:`~servers.oauth.OAuthServer` knows as valid for that mailbox (or an app-only
token). :meth:`throttle` answers the next requests with ``429`` and
``Retry-After``. :attr:`GraphServer.requests` counts requests per kind.
"""

from __future__ import annotations

import bisect
import email
import email.policy
import json
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from servers import LOCALHOST
from servers.https import QuietHandler, start_https, stop_https
from servers.oauth import OAuthServer
from servers.tlsca import ServerCert

WELL_KNOWN = {"inbox": "Inbox", "archive": "Archive", "deleteditems": "Deleted Items"}


@dataclass
class Message:
    id: str
    folder: str
    raw: bytes
    headers: list[dict[str, str]]
    internet_message_id: str
    subject: str


@dataclass
class Mailbox:
    folders: dict[str, str] = field(default_factory=dict)  # id -> display name
    messages: dict[str, Message] = field(default_factory=dict)
    #: (sequence, folder id, message id, "added" | "removed")
    events: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: The events' sequence numbers, for finding "since" without a scan (as Graph does).
    seqs: list[int] = field(default_factory=list)


class GraphServer:
    """See the module docstring."""

    def __init__(self, cert: ServerCert, oauth: OAuthServer) -> None:
        self.cert = cert
        self.oauth = oauth
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._boxes: dict[str, Mailbox] = {}
        self._seq = 0
        self._throttle = 0
        self._retry_after = 1
        self._expired_before = 0
        self._server: ThreadingHTTPServer | None = None

    # -- what tests do ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"https://{LOCALHOST}:{self._server.server_address[1]}/v1.0"

    def mailbox(self, user: str) -> Mailbox:
        with self._lock:
            return self._box(user)

    def _box(self, user: str) -> Mailbox:
        user = user.lower()
        if user not in self._boxes:
            box = Mailbox()
            for name in ("Inbox", "Archive", "Deleted Items"):
                box.folders["f-" + secrets.token_hex(6)] = name
            self._boxes[user] = box
        return self._boxes[user]

    def folder_id(self, user: str, name: str) -> str:
        box = self.mailbox(user)
        for folder_id, display in box.folders.items():
            if display.lower() == name.lower():
                return folder_id
        raise KeyError(name)

    def add_message(self, user: str, raw: bytes, folder: str = "Inbox") -> str:
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        headers = [{"name": k, "value": str(v)} for k, v in parsed.items()]
        with self._lock:
            box = self._box(user)
            folder_id = next(i for i, n in box.folders.items() if n.lower() == folder.lower())
            message_id = "AAMk" + secrets.token_urlsafe(18)
            box.messages[message_id] = Message(
                message_id,
                folder_id,
                raw,
                headers,
                str(parsed.get("Message-ID", "")),
                str(parsed.get("Subject", "")),
            )
            self._event(box, folder_id, message_id, "added")
        return message_id

    def add_messages(self, user: str, raws: list[bytes], folder: str = "Inbox") -> None:
        for raw in raws:
            self.add_message(user, raw, folder)

    def in_folder(self, user: str, folder: str) -> list[Message]:
        folder_id = self.folder_id(user, folder)
        with self._lock:
            return [m for m in self._box(user).messages.values() if m.folder == folder_id]

    def throttle(self, times: int, retry_after: int = 1) -> None:
        with self._lock:
            self._throttle, self._retry_after = times, retry_after

    def expire_delta_tokens(self) -> None:
        with self._lock:
            self._expired_before = self._seq + 1

    def _event(self, box: Mailbox, folder_id: str, message_id: str, kind: str) -> None:
        self._seq += 1
        box.events.append((self._seq, folder_id, message_id, kind))
        box.seqs.append(self._seq)

    # -- the API ----------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self._throttle > 0:
                self._throttle -= 1
                self.requests["throttled"] += 1
                return _json(
                    429,
                    {"error": {"code": "TooManyRequests"}},
                    {"Retry-After": str(self._retry_after)},
                )
        match = re.match(r"^/v1\.0/users/([^/]+)/(.*)$", path)
        if not match:
            return _json(404, {"error": {"code": "ResourceNotFound"}})
        user, rest = unquote(match.group(1)).lower(), match.group(2)
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        owner = self.oauth.username_for(token)
        if owner is None or (owner.lower() != user and not owner.startswith("app:")):
            return _json(
                401,
                {
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "Access token has expired or is not valid.",
                    }
                },
            )
        with self._lock:
            box = self._box(user)
            return self._route(box, user, method, rest, query, headers, body)

    def _route(
        self,
        box: Mailbox,
        user: str,
        method: str,
        rest: str,
        query: dict[str, str],
        headers: Any,
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        parts = [unquote(p) for p in rest.split("/") if p]
        if parts[:1] == ["mailFolders"]:
            if len(parts) == 1 and method == "POST":
                name = json.loads(body or b"{}").get("displayName", "")
                folder_id = "f-" + secrets.token_hex(6)
                box.folders[folder_id] = name
                self.requests["create-folder"] += 1
                return _json(201, {"id": folder_id, "displayName": name})
            if len(parts) == 1 or (len(parts) == 3 and parts[2] == "childFolders"):
                self.requests["list-folders"] += 1
                wanted = re.match(r"^displayName eq '(.*)'$", query.get("$filter", ""))
                found = (
                    [
                        {"id": i, "displayName": n}
                        for i, n in box.folders.items()
                        if "/" not in n
                        and (wanted is None or n == wanted.group(1).replace("''", "'"))
                    ]
                    if len(parts) == 1
                    else []
                )
                return _json(200, {"value": found})
            folder_id = self._folder(box, parts[1])
            if folder_id is None:
                return _json(404, {"error": {"code": "ErrorInvalidIdMalformed"}})
            if len(parts) == 2:
                self.requests["get-folder"] += 1
                return _json(200, {"id": folder_id, "displayName": box.folders[folder_id]})
            if parts[2:] == ["messages", "delta"]:
                return self._delta(box, user, folder_id, query, headers)
        if parts[:1] == ["messages"] and len(parts) >= 2:
            message = box.messages.get(parts[1])
            if message is None:
                return _json(404, {"error": {"code": "ErrorItemNotFound"}})
            if len(parts) == 2:
                self.requests["get-message"] += 1
                return _json(
                    200,
                    {
                        "id": message.id,
                        "internetMessageHeaders": message.headers,
                        "subject": message.subject,
                    },
                )
            if parts[2] == "$value":
                self.requests["get-mime"] += 1
                return 200, {"Content-Type": "text/plain"}, message.raw
            if parts[2] == "move" and method == "POST":
                target = self._folder(box, json.loads(body or b"{}").get("destinationId", ""))
                if target is None:
                    return _json(400, {"error": {"code": "ErrorInvalidIdMalformed"}})
                self.requests["move"] += 1
                if message.folder != target:
                    self._event(box, message.folder, message.id, "removed")
                    message.folder = target
                    self._event(box, target, message.id, "added")
                return _json(201, {"id": message.id, "parentFolderId": target})
        return _json(404, {"error": {"code": "ResourceNotFound"}})

    def _folder(self, box: Mailbox, key: str) -> str | None:
        if key in box.folders:
            return key
        name = WELL_KNOWN.get(key.lower())
        for folder_id, display in box.folders.items():
            if name is not None and display == name:
                return folder_id
        return None

    def _delta(
        self, box: Mailbox, user: str, folder_id: str, query: dict[str, str], headers: Any
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests["delta"] += 1
        page_size = 10
        prefer = headers.get("Prefer") or ""
        size = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if size:
            page_size = int(size.group(1))
        if "$deltatoken" in query:
            since = int(query["$deltatoken"])
            if since < self._expired_before:
                return _json(
                    410,
                    {
                        "error": {
                            "code": "SyncStateNotFound",
                            "message": "The sync state is not found.",
                        }
                    },
                )
            offset, upto = 0, self._seq
        elif "$skiptoken" in query:
            since_text, upto_text, offset_text = query["$skiptoken"].split(".")
            since, upto, offset = int(since_text), int(upto_text), int(offset_text)
        else:
            since, upto, offset = 0, self._seq, 0
        changes: dict[str, str] = {}
        start = bisect.bisect_right(box.seqs, since)
        for seq, event_folder, message_id, kind in box.events[start:]:
            if seq <= upto and event_folder == folder_id:
                changes[message_id] = kind
        if since == 0:  # an initial round lists what is in the folder now
            changes = {
                m: k
                for m, k in changes.items()
                if k == "added" and box.messages[m].folder == folder_id
            }
        items = list(changes.items())
        page = items[offset : offset + page_size]
        value = []
        for message_id, kind in page:
            if kind == "removed":
                value.append({"id": message_id, "@removed": {"reason": "deleted"}})
            else:
                message = box.messages[message_id]
                value.append(
                    {
                        "id": message_id,
                        "internetMessageId": message.internet_message_id,
                        "subject": message.subject,
                    }
                )
        base = f"{self.base_url}/users/{user}/mailFolders/{folder_id}/messages/delta"
        answer: dict[str, Any] = {"value": value}
        if offset + page_size < len(items):
            answer["@odata.nextLink"] = f"{base}?$skiptoken={since}.{upto}.{offset + page_size}"
        else:
            answer["@odata.deltaLink"] = f"{base}?$deltatoken={upto}"
        return _json(200, answer)

    # -- serving ----------------------------------------------------------------------

    def start(self) -> None:
        owner = self

        class Handler(QuietHandler):
            def _do(self, method: str) -> None:
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = owner.handle(method, split.path, query, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

        self._server = start_https(Handler, self.cert, "Graph server")

    def stop(self) -> None:
        stop_https(self._server)
        self._server = None


def _json(
    status: int, body: dict, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )
