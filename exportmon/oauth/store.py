"""Where a monitor's OAuth2 tokens are kept: one JSON file, mode 0600, in its state folder.

The file sits beside the ledger (``<root>/oauth-token.json``) rather than in a
system keyring: exportmon runs from cron and systemd on servers, where no keyring
is unlocked, and the state folder is already the one place that only the
monitor's user can read. Writes are atomic (a new file created exclusively, never
through a link, fsynced, then renamed over the old one), so a rotated refresh
token is on disk before it is ever used and a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exportmon import redact
from exportmon.errors import SignInError

FILE_NAME = "oauth-token.json"


@dataclass
class Tokens:
    """What a sign-in left: the tokens and when they expire (Unix seconds)."""

    provider: str
    client_id: str
    flow: str
    scopes: list[str]
    access_token: str = ""
    expires_at: float = 0.0
    refresh_token: str | None = None
    #: When ``exportmon login`` last ran, and when a refresh last succeeded (ISO 8601).
    signed_in_at: str = ""
    refreshed_at: str = ""
    #: Set when the provider says how long the refresh token lives.
    refresh_expires_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def register_secrets(self) -> None:
        for secret in (self.access_token, self.refresh_token):
            if secret:
                redact.register(secret)


def token_path(root: Path) -> Path:
    return Path(root) / FILE_NAME


def load(root: Path) -> Tokens | None:
    """The tokens saved for the monitor whose state folder is ``root``, or None."""
    path = token_path(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignInError(
            f"cannot read the saved sign-in {path}: {exc.strerror}",
            hint="remove it and run exportmon login again",
        ) from None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(1_000_000)
    try:
        data = json.loads(raw)
        tokens = Tokens(**{k: v for k, v in data.items() if k in Tokens.__dataclass_fields__})
    except (ValueError, TypeError):
        raise SignInError(
            f"the saved sign-in {path} is damaged", hint="run exportmon login again"
        ) from None
    tokens.register_secrets()
    return tokens


def save(root: Path, tokens: Tokens) -> Path:
    """Write ``tokens`` atomically (0600, no link followed) and return the file's path."""
    tokens.register_secrets()
    path = token_path(root)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{FILE_NAME}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps(asdict(tokens), indent=1).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
