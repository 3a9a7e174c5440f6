"""What a hostile-input case is, and the scene it runs in.

A :class:`Case` builds its hostile input into a :class:`Scene`: a monitor reading a
directory of ``.eml`` files (the ``dir`` source), delivering to a local folder, with
one good export mail beside the hostile input. ``test_hostile.py`` runs
``exportmon run --once`` on the scene and checks the outcome the case expects, and
the same for every case: a clear one-line message, the exit code, no traceback,
nothing written outside the monitor's folders, and the good export delivered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Literal

from fetchkit import export_mail, toml

from cli import CliResult

#: The good export that every scene holds and every run must deliver.
GOOD_FILE = "5-1-good.csv"
GOOD_CSV = b"id,name\n1,good\n2,also good\n"

#: What became of the hostile mail: left alone, refused as a mail, its export failed,
#: or (the documented safe outcome of some odd input) delivered; "none" when the case
#: has no mail of its own (config cases).
Outcome = Literal["ignored", "failed-mail", "failed-export", "delivered", "none"]


@dataclass(frozen=True)
class Case:
    """One hostile input and what exportmon must make of it."""

    id: str
    #: The issue's item it covers (for the count by area).
    area: Literal["mail", "link", "zip", "csv", "config", "identity", "fs", "state", "text"]
    build: Callable[[Scene], None]
    #: Expected exit code of ``run --once``.
    code: int = 1
    #: A regular expression one line of stderr must match (the clear message).
    message: str | None = None
    outcome: Outcome = "failed-export"
    #: Whether the good export mail is in the scene (config cases decide for themselves).
    good_mail: bool = True


@dataclass
class Scene:
    """The folders, config and servers of one case (see the module docs)."""

    base: Path
    #: Gives a pytest fixture by name (servers are started only for the cases that need them).
    fixture: Callable[[str], Any]
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: Extra global options put before ``run --once`` (e.g. ``--strict``).
    options: list[str] = field(default_factory=list)
    #: The hostile mails' file names (their uid in the ledger).
    hostile: list[str] = field(default_factory=list)
    #: Further checks on the result, run after the common ones.
    checks: list[Callable[[CliResult], None]] = field(default_factory=list)
    #: Paths exportmon may write to besides the monitor's folders.
    writable: list[Path] = field(default_factory=list)
    #: Extra monitor config files: name -> (TOML text, file mode).
    extra_configs: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Measure the peak memory of the exportmon process.
    measure_memory: bool = False

    def __post_init__(self) -> None:
        self.mails = self.base / "mails"
        self.root = self.base / "state"
        self.delivered = self.base / "delivered"
        self.monitors = self.base / "monitors"
        self.mails.mkdir(parents=True)
        self.config = {
            "ids": [777],
            "root": str(self.root),
            "source": {"kind": "dir", "path": str(self.mails), "archive": "Archive"},
            "deliver": {"to": str(self.delivered)},
        }

    # -- building the input ---------------------------------------------------------

    def mail(self, raw: bytes, name: str | None = None) -> str:
        """Put a hostile mail in the mailbox; returns its file name."""
        name = name or f"hostile-{len(self.hostile) + 1}.eml"
        (self.mails / name).write_bytes(raw)
        self.hostile.append(name)
        return name

    def export(self, link: str | None = None, **options: Any) -> str:
        """A hostile export mail for export 777 (see :func:`fetchkit.export_mail`)."""
        options.setdefault("token", f"hostile-{len(self.hostile) + 1}")
        return self.mail(export_mail(link, **options))

    def attach(self, name: str, content: bytes, **options: Any) -> str:
        """A hostile export mail carrying ``content`` as attachment ``name``."""
        return self.export(attachments=[(name, content)], **options)

    def good_mail(self) -> None:
        raw = export_mail(
            token="good-0001",
            message_id=make_msgid(domain="good.example"),
            attachments=[(GOOD_FILE, GOOD_CSV)],
        )
        (self.mails / "good.eml").write_bytes(raw)

    @property
    def web(self) -> Any:
        """The HTTPS fixture server (trustme CA), trusted by the monitor's downloads."""
        server = self.fixture("https_server")
        self.table("download")["ca_file"] = str(self.fixture("tls_ca").ca_file)
        return server

    def allow_local(self) -> None:
        """Let downloads reach 127.0.0.1 (cases that are not about the address guard)."""
        self.table("download")["allow_hosts"] = ["127.0.0.1"]

    def table(self, name: str) -> dict[str, Any]:
        return self.config.setdefault(name, {})

    def check(self, function: Callable[[CliResult], None]) -> None:
        self.checks.append(function)

    def must_not_exist(self, *paths: Path) -> None:
        def absent(result: CliResult) -> None:
            for path in paths:
                assert not path.exists(), f"{path} was written"

        self.check(absent)

    def no_request(self, server: Any, path: str) -> None:
        """Check that ``server`` was never asked for ``path`` (no connection was made)."""

        def none_made(result: CliResult) -> None:
            assert server.requests_for(path) == [], f"{path} was requested"

        self.check(none_made)

    def write(self) -> list[str]:
        """Write the config file(s); return the global options that select them."""
        self.monitors.mkdir(exist_ok=True)
        path = self.monitors / "777.toml"
        path.write_text(toml(self.config))
        path.chmod(0o600)
        for name, (text, mode) in self.extra_configs.items():
            extra = self.monitors / name
            if not extra.exists() and not extra.is_symlink():
                extra.write_text(text)
            if not extra.is_symlink():
                extra.chmod(mode)
        if self.extra_configs:
            return ["-c", str(self.monitors), *self.options]
        return ["-c", str(path), *self.options]

    def allowed(self) -> list[Path]:
        """Where exportmon may write: the monitor's folders, the mailbox, the destination."""
        return [self.root, self.delivered, self.mails, *self.writable]


def matching_lines(pattern: str, text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]
