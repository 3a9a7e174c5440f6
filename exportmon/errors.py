"""The exceptions exportmon raises, and the exit codes the CLI turns them into.

Every error a user can cause or meet (bad config, unreachable server, hostile
mail, full disk) is an :class:`ExportmonError`. Its message is one line that says
what is wrong and, through ``hint``, what to do about it. The CLI prints that line
and exits with the code documented in the README; a traceback is shown only with
``--verbose``.
"""

from __future__ import annotations

import re
from enum import IntEnum

from exportmon.redact import redact


class ExitCode(IntEnum):
    """Process exit codes (README, "Exit codes")."""

    OK = 0
    #: Some work failed (a mail, a download, a delivery); the rest went on.
    FAILED = 1
    #: Usage or configuration error: nothing was attempted.
    USAGE = 2
    #: ``status --nagios``: state unknown.
    UNKNOWN = 3
    #: Stopped by SIGINT before finishing.
    INTERRUPTED = 130


class ExportmonError(Exception):
    """Base class of every error exportmon reports to its user.

    ``message`` is one line without a trailing full stop; ``hint`` optionally
    says how to fix it.
    """

    exit_code: ExitCode = ExitCode.FAILED
    #: Whether trying again later can succeed; False for e.g. an expired link.
    retryable: bool = True

    def __init__(
        self, message: str, *, hint: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def one_line(self) -> str:
        """The message and hint as the single line the CLI prints, secrets masked."""
        return redact(f"{self.message} ({self.hint})" if self.hint else self.message)

    def lines(self) -> list[str]:
        """What a terminal shows: :meth:`one_line`, or one line per problem for an
        error that gathers several (:class:`ConfigProblems`)."""
        return [self.one_line()]


class UsageError(ExportmonError):
    """A command was called with arguments that cannot work."""

    exit_code = ExitCode.USAGE


class ConfigError(ExportmonError):
    """A monitor config is missing, unreadable or invalid."""

    exit_code = ExitCode.USAGE

    def __init__(
        self, message: str, *, path: object = None, key: str | None = None, hint: str | None = None
    ) -> None:
        where = ""
        if path is not None:
            where = f"{path}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message, hint=hint)
        self.path = path
        self.key = key


class ConfigProblems(ConfigError):
    """Several problems in one config file, found in one load: ``problems`` holds
    each (a :class:`ConfigError` naming its key)."""

    def __init__(self, path: object, problems: list[ConfigError]) -> None:
        prefix = f"{path}: "
        parts = [p.one_line().removeprefix(prefix) for p in problems]
        super().__init__(f"{len(problems)} problems: " + "; ".join(parts), path=path)
        self.problems = list(problems)

    def lines(self) -> list[str]:
        """One line per problem, each naming the file and the key."""
        return [p.one_line() for p in self.problems]


class SecretError(ConfigError):
    """A password or token could not be obtained (command failed, variable unset)."""


class ConnectionFailed(ExportmonError):
    """A server could not be reached or dropped the connection."""


class TLSError(ConnectionFailed):
    """A TLS handshake failed, usually an untrusted or wrong-host certificate."""


class AuthError(ExportmonError):
    """A server refused the credentials."""


class SignInError(AuthError):
    """An OAuth2 sign-in is missing, has expired or was refused by the provider.

    Not retryable: someone has to run ``exportmon login`` (or fix the app
    registration) before it can work again.
    """

    retryable = False


class MailError(ExportmonError):
    """A mail could not be read or is not a usable export mail."""


class DownloadError(ExportmonError):
    """An export could not be downloaded."""


class LinkRefused(DownloadError):
    """A link points somewhere exportmon will not go (scheme, private address)."""

    retryable = False


class LinkExpired(DownloadError):
    """A pre-signed link's expiry time has passed."""

    retryable = False


class ExtractError(ExportmonError):
    """An archive is corrupt or hostile (zip slip, bomb, symlink, encrypted entry)."""

    retryable = False


class UnsafePathError(ExportmonError):
    """A path exportmon would write through is a link it did not create, or leaves
    the folder it belongs to."""


class CsvError(ExportmonError):
    """A CSV file is malformed or cannot be decoded."""


class DeliveryError(ExportmonError):
    """A file could not be delivered to its destination."""


class ArchiveError(ExportmonError):
    """A processed mail could not be moved to the archive folder."""


class LedgerError(ExportmonError):
    """The ledger database is unusable (corrupt, locked, newer schema)."""


class AlertError(ExportmonError):
    """An alert could not be sent (it is kept and retried later)."""


class LockedError(ExportmonError):
    """Another exportmon process holds this monitor's lock."""

    exit_code = ExitCode.USAGE


def reason_text(exc: BaseException) -> str:
    """What a library's exception says, as text: bytes replies decoded, never a
    Python repr such as ``b'[AUTHENTICATIONFAILED] ...'``."""
    parts = []
    for arg in exc.args:
        if isinstance(arg, bytes | bytearray):
            parts.append(bytes(arg).decode("utf-8", "replace"))
        elif isinstance(arg, str):
            parts.append(arg)
        else:
            parts.append(str(arg))
    text = " ".join(part.strip() for part in parts if part.strip())
    if not text:
        text = str(exc)
    match = re.fullmatch(r"b(['\"])(.*)\1", text, re.S)  # a repr that got into the text
    if match:
        text = match.group(2).encode("latin-1", "replace").decode("unicode_escape", "replace")
    return text or type(exc).__name__
