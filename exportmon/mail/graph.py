"""Reading a Microsoft 365 mailbox through Microsoft Graph (``kind = "graph"``).

For tenants that switch IMAP off. New mails are found with a delta query on the
folder: the first poll lists the folder once, later polls send the saved
``@odata.deltaLink`` and get only what changed, so a poll with no new mail costs
one request whatever the mailbox holds. The delta link is kept in the ledger's
mailbox state, saved only after every mail of a round is recorded; a round cut
short is read again from the old link and the mails it took are recognised, so
nothing is taken twice. An expired link (``410 Gone``) starts a fresh round.

Each new mail is screened from its ``internetMessageHeaders`` (so the
``X-ITRP-*`` headers are seen) and, when it is an export mail, read whole as MIME
(``/$value``, streamed and bounded) by the same :class:`~exportmon.mail.source.Intake`
as IMAP. Processed mails are moved to ``archive`` (created when missing). Message
ids are immutable (``Prefer: IdType="ImmutableId"``), so a move keeps them.

Requests carry an OAuth2 access token from :func:`exportmon.oauth.access_token`;
``429`` and ``5xx`` answers are retried after ``Retry-After`` (or a back-off).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from exportmon import json_answers
from exportmon.errors import ArchiveError, AuthError, ConnectionFailed, TLSError
from exportmon.log import get_logger
from exportmon.mail.source import (
    MAX_MAIL_BYTES,
    ArchiveOutcome,
    Intake,
    MailLocation,
    MailSource,
    PolledMail,
)
from exportmon.net.tls import client_context

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Ledger, Mail

log = get_logger(__name__)

#: Messages per page of a delta round.
PAGE_SIZE = 100
#: How often a throttled or failing request is tried before the poll fails.
ATTEMPTS = 5
#: Longest wait for a ``Retry-After``.
MAX_WAIT = 60.0
READ_BLOCK = 1024 * 1024


class GraphSource(MailSource):
    """A mailbox folder read through Microsoft Graph."""

    moves_mail = True

    def __init__(self, monitor: MonitorConfig) -> None:
        super().__init__(monitor)
        source = monitor.source
        self.base = source.graph_url.rstrip("/")
        parts = urlsplit(self.base)
        if parts.scheme != "https" or not parts.hostname:
            raise ConnectionFailed(f"source.graph_url must be an https:// URL, not {self.base}")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.user = source.user
        self.mailbox = source.mailbox or "Inbox"
        self.key = f"graph://{quote(self.user, safe='')}@{self.host}"
        self.where = f"Microsoft Graph ({self.host})"
        self._connection: http.client.HTTPSConnection | None = None
        self._folders: dict[str, str] = {}
        self._context: ssl.SSLContext | None = None

    # -- HTTP -------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            if self._context is None:
                self._context = client_context(self.monitor.source.ca_file, ca_key="source.ca_file")
            timeout = self.monitor.source.timeout or 60.0
            self._connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._context
            )
        return self._connection

    def _path(self, target: str) -> str:
        """The request target for an absolute link (nextLink, deltaLink) or a path."""
        if target.startswith("https://"):
            parts = urlsplit(target)
            return parts.path + ("?" + parts.query if parts.query else "")
        return f"{self.prefix}/users/{quote(self.user, safe='@')}/{target}"

    def _request(
        self,
        method: str,
        target: str,
        *,
        body: dict[str, Any] | None = None,
        limit: int = 10 * 1024 * 1024,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One Graph request, retried on 429/5xx and on a dropped connection."""
        from exportmon import oauth

        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, ATTEMPTS + 1):
            headers = {
                "Authorization": "Bearer " + oauth.access_token(self.monitor),
                "Prefer": 'IdType="ImmutableId"',
                "Accept": "application/json",
                "User-Agent": "exportmon",
                **(extra_headers or {}),
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                connection = self._connect()
                connection.request(method, self._path(target), body=data, headers=headers)
                response = connection.getresponse()
                payload, whole = _read_bounded(response, limit)
                if not whole:  # the rest is not read: the connection cannot be reused
                    self.close()
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise TLSError(
                    f"{self.where}: certificate not trusted: {exc.verify_message}",
                    hint="set source.ca_file to the CA's PEM file",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == ATTEMPTS:
                    raise ConnectionFailed(f"cannot reach {self.where}: {exc}") from None
                time.sleep(min(2.0**attempt, MAX_WAIT))
                continue
            status = response.status
            if status == 429 or status >= 500:
                if attempt == ATTEMPTS:
                    raise ConnectionFailed(
                        f"{self.where} answered HTTP {status} {attempt} times",
                        hint="Graph throttles busy mailboxes; the next poll tries again",
                    )
                wait = _retry_after(response.getheader("Retry-After"), attempt)
                log.info("%s answered HTTP %d; waiting %.0f s", self.where, status, wait)
                time.sleep(wait)
                continue
            if status == 401:
                raise AuthError(
                    f"{self.where} refused the access token: {_graph_error(payload)}",
                    hint="check the app's Mail.ReadWrite permission and admin consent",
                )
            if status == 403:
                raise AuthError(
                    f"{self.where} denied access to the mailbox of {self.user}: "
                    f"{_graph_error(payload)}",
                    hint="the app needs Mail.ReadWrite for this mailbox",
                )
            return status, payload
        raise AssertionError("unreachable")

    def _json(self, method: str, target: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        status, payload = self._request(method, target, **kwargs)
        try:
            answer = json_answers.loads(payload or b"{}")
        except ValueError:
            answer = {}
        return status, answer if isinstance(answer, dict) else {}

    # -- folders ----------------------------------------------------------------------

    def _folder(self, name: str, *, create: bool = False) -> str:
        """The id of folder ``name`` (a well-known name, a display name or ``A/B``)."""
        if name in self._folders:
            return self._folders[name]
        status, answer = self._json("GET", f"mailFolders/{quote(name, safe='')}")
        if status == 200 and answer.get("id"):
            self._folders[name] = answer["id"]
            return str(answer["id"])
        parent = ""
        folder_id = ""
        for part in name.split("/"):
            where = f"mailFolders/{parent}/childFolders" if parent else "mailFolders"
            escaped = part.replace("'", "''")
            query = urlencode({"$filter": f"displayName eq '{escaped}'"})
            status, answer = self._json("GET", f"{where}?{query}")
            found = answer.get("value") or []
            if status == 200 and found:
                folder_id = parent = str(found[0]["id"])
                continue
            if create and not parent:
                status, answer = self._json("POST", "mailFolders", body={"displayName": part})
                if status in (200, 201) and answer.get("id"):
                    folder_id = parent = str(answer["id"])
                    log.info("created folder %r in the mailbox of %s", part, self.user)
                    continue
            raise ConnectionFailed(
                f"{self.where}: the mailbox of {self.user} has no folder {name!r}",
                hint="check source.mailbox / source.archive (display name or well-known name)",
            )
        self._folders[name] = folder_id
        return folder_id

    # -- the source interface ---------------------------------------------------------

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        folder = self._folder(self.mailbox)
        state = ledger.mailbox_state(self.key, self.mailbox)
        saved = json.loads(state.extra) if state and state.extra else {}
        first = f"mailFolders/{folder}/messages/delta?" + urlencode(
            {"$select": "id,internetMessageId,subject"}
        )
        target = saved.get("delta") or first
        intake = Intake(self.monitor, ledger, dry_run=dry_run, relocating=False)
        page_header = {"Prefer": f'IdType="ImmutableId", odata.maxpagesize={PAGE_SIZE}'}
        while True:
            status, answer = self._json("GET", target, extra_headers=page_header)
            if status == 410 and target != first:
                log.info(
                    "%s: the saved delta link has expired; reading the folder again", self.where
                )
                target, intake.relocating = first, True
                continue
            if status != 200:
                raise ConnectionFailed(
                    f"{self.where}: delta query on {self.mailbox!r} answered HTTP {status}: "
                    f"{answer.get('error', {}).get('message', '')}".rstrip(": ")
                )
            for item in answer.get("value") or []:
                if "@removed" in item or not item.get("id"):
                    continue
                if not self._taken_before(ledger, str(item["id"])):
                    self._take(intake, str(item["id"]))
            if answer.get("@odata.nextLink"):
                target = str(answer["@odata.nextLink"])
                continue
            delta = answer.get("@odata.deltaLink")
            break
        if not dry_run and delta:
            ledger.save_mailbox_state(self.key, self.mailbox, None, 0, {"delta": delta})
        return intake.results

    def _taken_before(self, ledger: Ledger, message_id: str) -> bool:
        """Whether the mail was recorded before (one indexed look-up, not the whole list);
        a mail recorded as new without exports (a crash cut its intake short) is taken again."""
        mail = ledger.find_mail(source=self.key, mailbox=self.mailbox, uid=message_id)
        if mail is None:
            return False
        return mail.state != "new" or bool(ledger.exports(mail_id=mail.id))

    def _take(self, intake: Intake, message_id: str) -> None:
        location = MailLocation(self.key, self.mailbox, None, message_id)
        status, answer = self._json(
            "GET", f"messages/{quote(message_id, safe='')}?$select=internetMessageHeaders"
        )
        if status == 404:
            return  # moved or deleted since the delta round listed it
        headers = "".join(
            f"{h.get('name', '')}: {h.get('value', '')}\r\n"
            for h in answer.get("internetMessageHeaders") or []
        )
        if not intake.screen_headers(location, (headers + "\r\n").encode("utf-8", "replace"), None):
            return
        status, raw = self._request(
            "GET", f"messages/{quote(message_id, safe='')}/$value", limit=MAX_MAIL_BYTES + 1
        )
        if status == 404:
            return
        if len(raw) > MAX_MAIL_BYTES:
            intake.too_large(location, None)
            return
        intake.take(location, raw)

    def archive(self, mail: Mail) -> ArchiveOutcome:
        archive = self.monitor.source.archive
        if not archive:
            return "kept"
        try:
            destination = self._folder(archive, create=True)
            status, answer = self._json(
                "POST",
                f"messages/{quote(str(mail.uid), safe='')}/move",
                body={"destinationId": destination},
            )
        except ConnectionFailed as exc:
            raise ArchiveError(f"cannot move mail to {archive!r}: {exc.message}") from None
        if status == 404:
            return "gone"
        if status not in (200, 201):
            raise ArchiveError(
                f"{self.where}: moving the mail to {archive!r} answered HTTP {status}: "
                f"{answer.get('error', {}).get('message', '')}"
            )
        return "archived"

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _read_bounded(response: http.client.HTTPResponse, limit: int) -> tuple[bytes, bool]:
    """The body read in blocks, at most ``limit`` bytes; and whether it was read whole."""
    chunks: list[bytes] = []
    kept = 0
    while kept < limit:
        block = response.read(min(READ_BLOCK, limit - kept))
        if not block:
            return b"".join(chunks), True
        chunks.append(block)
        kept += len(block)
    return b"".join(chunks), not response.read(1)


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(MAX_WAIT, max(0.0, float(header))) if header else min(2.0**attempt, MAX_WAIT)
    except ValueError:
        return min(2.0**attempt, MAX_WAIT)


def _graph_error(payload: bytes) -> str:
    try:
        error = json_answers.loads(payload).get("error", {})
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return "no reason given"
