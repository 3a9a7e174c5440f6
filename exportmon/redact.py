"""Keeping secrets out of logs, errors and output, without garbling ordinary text.

:func:`redact` is applied to everything exportmon shows or writes (log lines, error
lines, ``status``, reports, alerts, JSON). It masks secrets in two ways:

1. **By position**, whatever the secret is and whether or not exportmon knows it:
   the userinfo of a URL (``https://user:pw@host``, ``https://:pw@host``,
   ``https://token@host``, also percent-encoded inside another URL), credential
   parameters in query strings and forms (``token=``, ``sig=``, ``X-Amz-Signature=``,
   ``password=``, ...), ``Authorization`` values (``Bearer ...``, ``Basic ...``),
   secret-named fields in JSON or ``key = value`` text (``"access_token": "..."``),
   and the password of protocol commands in debug output (IMAP ``LOGIN``, POP3/FTP
   ``PASS``, SMTP ``AUTH``).
2. **By value**, for the secrets registered with :func:`register` (every password and
   token exportmon resolves): a registered secret is masked wherever it stands as a
   whole token, that is not run together with letters or digits on either side, so
   the password ``wrong`` never turns the monitor name ``wrongpw`` into ``***pw``.
   Only secrets that cannot pass for ordinary words are masked in free text this
   way: at least :data:`FREE_TEXT_LENGTH` characters of at least two kinds (letters,
   digits, others), or at least :data:`LONG_SECRET` characters of any kind. A short or
   word-like secret (``IMAP``, ``wrong``, ``summer``) would otherwise eat the same
   word wherever it occurs, and the places such a secret actually leaks through are
   the positions of rule 1, which mask it anyway. Percent-encoded forms of a
   registered secret are masked too.

Masks are ``***``; the key, user name or scheme next to a masked value is kept, so a
line stays readable (``https://bob:***@host``, ``token=***``).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, quote_plus

MASK = "***"

#: Registered secrets at least this long with two kinds of characters are masked in
#: free text (as whole tokens).
FREE_TEXT_LENGTH = 8
#: Registered secrets at least this long are masked in free text whatever they hold.
LONG_SECRET = 16
#: Secrets shorter than this are never looked for by value: masking "a" or "12"
#: hides nothing of value (the positional rules still mask them).
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: Names of query and form parameters that hold credentials.
_SECRET_NAMES = (
    r"signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature"
    r"|x-goog-credential|sig|token|access_token|refresh_token|id_token|client_secret"
    r"|code_verifier|password|passwd|pwd|pass|secret|key|apikey|api_key|api-key"
    r"|auth|session|sessionid|session_id|private_key"
)
#: ``name=value`` in a query string or a form body (after ``?``, ``&`` or ``;``).
_PARAMETER = re.compile(rf"(?i)([?&;](?:{_SECRET_NAMES})=)([^&\s\"'<>#;,)]+)")
#: ``name=value`` anywhere, for names that are never ordinary words.
_NAMED_VALUE = re.compile(
    r"(?i)((?<![A-Za-z0-9_.-])(?:password|passwd|token|access_token|refresh_token"
    r"|client_secret|api_key|apikey|x-amz-signature|signature)=)([^&\s\"'<>#;,)]+)"
)
#: Names of JSON or TOML fields that hold credentials (narrower than parameter names:
#: ``key`` or ``session`` are ordinary fields there).
_FIELD_NAMES = (
    r"password|passwd|secret|token|access_token|refresh_token|id_token|client_secret"
    r"|api_key|apikey|private_key|[a-z_]*_(?:token|secret|password)"
)
#: ``"name": "value"`` (JSON) and ``name = "value"`` (TOML) with a quoted value.
_FIELD = re.compile(
    rf"(?i)((?<![A-Za-z0-9_])[\"']?(?:{_FIELD_NAMES})[\"']?\s*[:=]\s*)"
    r"([\"'])((?:(?!\2)[^\\\n]|\\.)*)\2"
)
#: ``Authorization: <scheme> <credentials>`` and a bare ``Bearer <token>``.
_AUTHORIZATION = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:[a-z-]+\s+)?)([^\s\"',;]+)"
    r"|(?-i:(\bBearer\s+))([A-Za-z0-9._~+/=-]{8,})"
)
#: ``scheme://userinfo@`` up to the last ``@`` before the host's end.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s<>\"\\]*)@")
#: The same, percent-encoded inside another URL (``https%3A%2F%2Fuser%3Apw%40host``).
_ENCODED_USERINFO = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*%3A%2F%2F)((?:(?!%2F|%3F|%23)[^/?#\s&])*?)%40"
)
#: Client commands as protocol debug output shows them: IMAP ``<tag> LOGIN user pass``,
#: POP3/FTP ``PASS pass``, SMTP ``AUTH PLAIN <base64>`` (upper case, as sent).
_PROTOCOL = re.compile(
    r"(\b[A-Za-z]*\d+ LOGIN (?:\"(?:[^\"\\]|\\.)*\"|\S+) )(\"(?:[^\"\\]|\\.)*\"|[^\s'\"]+)"
    r"|((?<![A-Za-z])PASS )([^\s'\"]+)"
    r"|(\bAUTH (?:PLAIN|LOGIN|XOAUTH2|OAUTHBEARER) )([A-Za-z0-9+/=]{4,})"
)


def register(secret: str | None) -> None:
    """Remember ``secret`` so that :func:`redact` masks it from now on (see the module)."""
    global _pattern
    if not secret or len(secret) < MIN_SECRET_LENGTH or not masked_in_free_text(secret):
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        forms = {form for s in _secrets for form in (s, quote(s, safe=""), quote_plus(s))}
        ordered = sorted(forms, key=len, reverse=True)
        alternatives = "|".join(re.escape(form) for form in ordered)
        _pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def masked_in_free_text(secret: str) -> bool:
    """Whether ``secret`` is distinctive enough to be masked wherever it appears."""
    if len(secret) >= LONG_SECRET:
        return True
    kinds = (
        any(c.isalpha() for c in secret)
        + any(c.isdigit() for c in secret)
        + any(not c.isalnum() for c in secret)
    )
    return len(secret) >= FREE_TEXT_LENGTH and kinds >= 2


def _userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    user, colon, password = userinfo.partition(":")
    if colon:
        return f"{scheme}{user}:{MASK if password else ''}@"
    if scheme.lower().startswith(("http", "ws")):
        # A user name alone in a web link is a token (https://<token>@host).
        return f"{scheme}{MASK}@"
    return match.group(0)


def _encoded_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    parts = re.split(r"(?i)(%3A)", userinfo, maxsplit=1)
    if len(parts) == 3:
        user, colon, password = parts
        return f"{scheme}{user}{colon}{MASK if password else ''}%40"
    return f"{scheme}{MASK}%40"


def _protocol(match: re.Match[str]) -> str:
    kept = match.group(1) or match.group(3) or match.group(5)
    return kept + MASK


def redact(text: str) -> str:
    """``text`` with credentials masked by position and registered secrets by value."""
    if not text:
        return text
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _ENCODED_USERINFO.sub(_encoded_userinfo, text)
    text = _PARAMETER.sub(lambda m: m.group(1) + MASK, text)
    text = _NAMED_VALUE.sub(lambda m: m.group(1) + MASK, text)
    text = _FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(2)}", text)
    text = _AUTHORIZATION.sub(lambda m: (m.group(1) or m.group(3)) + MASK, text)
    text = _PROTOCOL.sub(_protocol, text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def forget_all() -> None:
    """Drop every registered secret (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
