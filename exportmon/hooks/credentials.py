"""Obtaining passwords and tokens: inline, from an environment variable, or from a command.

A secret is configured in exactly one of three ways (``password``,
``password_env``, ``password_command`` and the same for other prefixes). Commands
run through ``/bin/sh -c`` so that ``pass show mail/exports`` or
``security find-generic-password -w -s imap`` work as written; their first output
line is the secret. Secrets are passed to no child process on its command line,
and are registered with :mod:`exportmon.redact` as soon as they are known.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass

from exportmon import redact
from exportmon.errors import SecretError

#: How long a password or token command may take.
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class SecretSource:
    """Where one secret comes from. At most one of the three is set."""

    #: Config key prefix used in messages, e.g. ``source.password``.
    key: str
    value: str | None = None
    env: str | None = None
    command: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.value is not None or self.env or self.command)

    def describe(self) -> str:
        """Where the secret comes from, without the secret itself."""
        if self.command:
            return f"the command in {self.key}_command"
        if self.env:
            return f"environment variable {self.env}"
        if self.value is not None:
            return f"{self.key} in the config file"
        return "nowhere"


_cache: dict[SecretSource, str] = {}
_cache_lock = threading.Lock()


def resolve(source: SecretSource, *, cache: bool = True) -> str:
    """The secret from ``source``.

    Password commands run once per process (``cache``); token commands should
    pass ``cache=False`` because tokens expire.

    Raises :class:`SecretError` naming the key when the secret cannot be had.
    """
    if cache:
        with _cache_lock:
            if source in _cache:
                return _cache[source]
    if source.command:
        secret = _run_command(source)
    elif source.env:
        from_env = os.environ.get(source.env)
        if not from_env:
            raise SecretError(
                f"environment variable {source.env} is not set or empty",
                key=f"{source.key}_env",
                hint=f"export {source.env}=... before running exportmon",
            )
        secret = from_env
    elif source.value is not None:
        secret = source.value
    else:
        raise SecretError(
            "no password configured",
            key=source.key,
            hint=f"set {source.key}, {source.key}_env or {source.key}_command",
        )
    redact.register(secret)
    if cache:
        with _cache_lock:
            _cache[source] = secret
    return secret


def _run_command(source: SecretSource) -> str:
    key = f"{source.key}_command"
    try:
        completed = subprocess.run(
            ["/bin/sh", "-c", source.command or ""],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(
            f"command did not finish within {COMMAND_TIMEOUT:.0f} s", key=key
        ) from None
    except OSError as exc:
        raise SecretError(f"command could not be started: {exc.strerror}", key=key) from None
    output = completed.stdout.decode("utf-8", "replace")
    secret = output.splitlines()[0] if output else ""
    # Mask before anything from the command can reach an error message.
    redact.register(secret)
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = redact.redact(detail[0]) if detail else "no error output"
        raise SecretError(f"command exited with status {completed.returncode}: {reason}", key=key)
    if not secret:
        raise SecretError("command printed nothing", key=key, hint="it must print the secret")
    return secret


def clear_cache() -> None:
    """Forget cached secrets (config reload, tests)."""
    with _cache_lock:
        _cache.clear()
