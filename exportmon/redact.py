"""Keeping secrets out of logs, errors and output.

Every secret exportmon obtains (passwords, tokens) is registered here the moment
it is resolved; :func:`redact` replaces registered secrets, URL passwords and
signed-URL signatures in any text before it is shown or written.
"""

from __future__ import annotations

import re
import threading

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: Query parameters that carry credentials in pre-signed or tokenised links.
_SENSITIVE_QUERY = re.compile(
    r"(?i)\b(Signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|sig|token"
    r"|access_token|password|passwd|pwd|key|apikey|api_key)=([^&\s\"'<>]+)"
)
#: ``scheme://user:password@host`` in any URL.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)@")

#: Secrets shorter than this are not masked in free text: masking "a" or "12"
#: would garble every log line and hide nothing of value.
MIN_SECRET_LENGTH = 4


def register(secret: str | None) -> None:
    """Remember ``secret`` so that :func:`redact` masks it from now on."""
    global _pattern
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret and credential-like URL part masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _SENSITIVE_QUERY.sub(lambda m: m.group(1) + "=" + MASK, text)


def forget_all() -> None:
    """Drop every registered secret (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
