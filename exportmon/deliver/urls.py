"""Destination URLs: what ``[[deliver]] url`` (and ``push-ftp --url``) can say.

* a local folder: ``/srv/in``, ``~/in``, ``relative/in`` or ``file:///srv/in``;
* ``ftp://host[:port]/folder`` and ``ftps://...`` (explicit TLS): the folder is
  below the login folder, ``//folder`` is absolute;
* ``sftp://[user@]host[:port]/folder``: the folder is absolute, ``/~/folder`` is
  below the login folder;
* ``https://host[:port]/path`` (and ``http://``): the address files are sent to.

A password never belongs in a URL: one there is refused, with the ``*_env`` /
``*_command`` options as the hint. A user name in the URL is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from exportmon.errors import UsageError

#: Each remote kind of destination and its standard port.
DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "sftp": 22, "https": 443, "http": 80}
#: The scheme of each kind of destination; a path without one is a local folder.
SCHEMES = ("file", *DEFAULT_PORTS)

_REMOTE = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://"
    r"(?:(?P<userinfo>[^@/?#]*)@)?"
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[^/:?#\[\]@\s]+)"
    r"(?::(?P<port>\d*))?"
    r"(?P<path>/[^?#]*)?"
    r"(?P<rest>[?#].*)?",
    re.DOTALL,
)


#: The ``user[:password]@`` of a URL, whatever follows it.
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")


@dataclass(frozen=True)
class DestinationURL:
    """A parsed destination URL; ``kind`` is ``file`` for a local folder."""

    kind: str
    #: The local folder (``file``) or the remote path (``/in/exports``; may be empty).
    path: str
    host: str = ""
    port: int = 0
    user: str | None = None
    #: The query of an ``https`` URL, kept as written (``?a=b``).
    query: str = ""

    @property
    def remote(self) -> bool:
        return self.kind != "file"

    @property
    def netloc(self) -> str:
        """``host:port`` with IPv6 hosts bracketed, no user."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_destination_url(url: str) -> DestinationURL:
    """``url`` taken apart; :class:`UsageError` naming what is wrong otherwise."""
    text = url.strip()
    if not text:
        raise UsageError("empty destination URL", hint='e.g. url = "/srv/in" or sftp://...')
    if "\0" in text or any(ord(c) < 32 for c in text):
        raise UsageError("destination URL contains control characters")
    if "://" not in text:
        return DestinationURL("file", text)
    match = _REMOTE.fullmatch(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"unknown destination scheme {scheme!r}",
            hint="use a folder, file://, ftp://, ftps://, sftp:// or https://",
        )
    if scheme == "file":
        rest = text[len("file://") :]
        if not rest.startswith("/"):
            raise UsageError(
                f"a file:// URL needs an absolute path: {url!r}", hint="file:///srv/in"
            )
        return DestinationURL("file", unquote(rest))
    if not match:
        raise UsageError(
            f"not a {scheme}:// address: {url!r}", hint=f"e.g. {scheme}://host.example.com/in"
        )
    userinfo = match.group("userinfo")
    user = None
    if userinfo is not None:
        if ":" in userinfo:
            raise UsageError(
                "a password does not belong in a destination URL",
                hint="set password_env or password_command (or password) instead",
            )
        user = unquote(userinfo) or None
    port_text = match.group("port")
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    if not 0 < port <= 65535:
        raise UsageError(f"not a port number: {port_text}")
    rest = match.group("rest") or ""
    if rest.startswith("#") or (rest and scheme != "https" and scheme != "http"):
        raise UsageError(f"a {scheme}:// destination takes no query or fragment: {url!r}")
    return DestinationURL(
        kind=scheme,
        path=unquote(match.group("path") or ""),
        host=match.group("host").strip("[]"),
        port=port,
        user=user,
        query=rest,
    )


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``user[:password]@``, with the user and the password (both
    unquoted, ``None`` where absent): what a destination URL may keep, and what must
    go elsewhere. A URL without them comes back as it is."""
    text = url.strip()
    match = _USERINFO.match(text)
    if match is None:
        return text, None, None
    user, colon, password = match.group("userinfo").partition(":")
    bare = match.group("head") + text[match.end() :]
    return bare, unquote(user) or None, unquote(password) if colon else None
