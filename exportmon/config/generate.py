"""Writing a new, ready-to-edit monitor config (``exportmon generate``).

The file is rendered from the schema: every option of every table is there,
under its doc, with what ``generate`` was told written out and every other
option commented out at its default (or an example). The text is loaded back
with the loader before anything is written: ``generate`` never leaves a file
that does not load.
"""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from exportmon.atomic import atomic_write
from exportmon.config.providers import Provider, guess_provider
from exportmon.config.reference import (
    Table,
    default_of,
    layout,
    placeholder,
    scalar_options,
    toml_string,
    toml_value,
)
from exportmon.config.schema import SourceConfig, toml_name
from exportmon.deliver.urls import parse_destination_url, split_userinfo
from exportmon.errors import ConfigError, UsageError
from exportmon.paths import APP_NAME, HOME_ENV, monitors_dir
from exportmon.redact import register as register_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Longest line written (a long path given by the user may still exceed it).
WIDTH = 80
#: The variable the generated FTP entry reads its password from.
FTP_PASSWORD_ENV = "EXPORTMON_FTP_PASSWORD"
#: The variable a generated ``[[deliver]]`` entry of each remote kind reads its
#: password from (a password in a URL is never written).
PASSWORD_ENVS = {
    "ftp": FTP_PASSWORD_ENV,
    "ftps": FTP_PASSWORD_ENV,
    "sftp": "EXPORTMON_SFTP_PASSWORD",
    "https": "EXPORTMON_HTTPS_PASSWORD",
}

__all__ = ["NewMonitor", "config_path", "render", "toml_string", "write"]


@dataclass
class NewMonitor:
    """What ``exportmon generate`` was told."""

    export_id: int
    address: str
    #: At most one of the three password sources.
    password: str | None = None
    password_command: str | None = None
    password_env: str | None = None
    name: str | None = None
    to: str | None = None
    ftp_url: str | None = None
    #: More destinations (``--url``): ftp://, ftps://, sftp:// or https://.
    urls: tuple[str, ...] = ()
    #: The SSH key of the sftp:// ones.
    ssh_key: str | None = None

    @property
    def monitor_name(self) -> str:
        return self.name or str(self.export_id)

    @property
    def has_password(self) -> bool:
        return any(p is not None for p in (self.password, self.password_command, self.password_env))


@dataclass(frozen=True)
class UrlTarget:
    """A destination URL taken apart: the URL without its user and password, its
    kind, the user, and the password that was in it (it is never written)."""

    url: str
    kind: str
    user: str | None
    dropped_password: str | None


def split_destination_url(
    text: str, *, option: str = "--url", kinds: tuple[str, ...] = tuple(PASSWORD_ENVS)
) -> UrlTarget:
    """``sftp://bob:pw@host:2222/in`` as ``sftp://host:2222/in``, kind ``sftp``, user
    ``bob`` and the dropped password (registered for redaction at once, so no message
    shows it). :class:`UsageError` for anything but a server address of one of
    ``kinds``, as :func:`~exportmon.deliver.urls.parse_destination_url` reads it."""
    bare, user, password = split_userinfo(text)
    if password is not None:
        register_secret(password)
    try:
        kind = parse_destination_url(bare).kind
    except UsageError as exc:
        raise UsageError(f"{option}: {exc.message}", hint=exc.hint) from None
    if kind not in kinds:
        schemes = ", ".join(f"{kind}://" for kind in kinds)
        raise UsageError(
            f"{option} takes a server address ({schemes}), got {bare!r}",
            hint="e.g. sftp://user@sftp.example.com/in/exports (--to for a folder)",
        )
    return UrlTarget(url=bare, kind=kind, user=user, dropped_password=password)


def split_ftp_url(text: str) -> UrlTarget:
    """An ``--ftp`` URL taken apart (:func:`split_destination_url`, FTP kinds only)."""
    return split_destination_url(text, option="--ftp", kinds=("ftp", "ftps"))


def config_path(new: NewMonitor, directory: Path | None = None) -> Path:
    """Where :func:`write` puts the config for ``new``."""
    return (directory or monitors_dir()) / f"{new.monitor_name}.toml"


def delivery_folder(name: str) -> Path:
    """The default destination folder of monitor ``name``: apart from its state folder
    (``$EXPORTMON_HOME/delivered/<name>``, or the user data folder's)."""
    home = os.environ.get(HOME_ENV, "").strip()
    base = Path(home).expanduser().resolve() if home else platformdirs.user_data_path(APP_NAME)
    return base / "delivered" / name


def signs_in_with_oauth(new: NewMonitor, provider: Provider) -> bool:
    """Whether the config signs in with OAuth2: always for Microsoft, for Google
    unless an (app) password was given."""
    return bool(provider.oauth) and not (provider.takes_password and new.has_password)


def source_values(new: NewMonitor, provider: Provider) -> dict[str, Any]:
    """The ``[source]`` options ``generate`` writes out."""
    values: dict[str, Any] = {
        "kind": "imap",
        "host": provider.host,
        "port": provider.port,
        "security": provider.security,
        "user": new.address,
    }
    if signs_in_with_oauth(new, provider):
        from exportmon.oauth.providers import flow_name

        probe = SourceConfig(host=provider.host, auth="oauth2", oauth_provider=provider.oauth)  # type: ignore[arg-type]
        values.update(
            auth="oauth2",
            oauth_provider=provider.oauth,
            oauth_flow=flow_name(probe),
            oauth_client_id="",
        )
    elif new.password_command is not None:
        values["password_command"] = new.password_command
    elif new.password_env is not None:
        values["password_env"] = new.password_env
    else:
        values["password"] = new.password or ""
    if provider.archive != SourceConfig(host=provider.host).archive:
        values["archive"] = provider.archive
    return values


def destination_values(new: NewMonitor) -> list[dict[str, Any]]:
    """The ``[[deliver]]`` entries ``generate`` writes: the folder, then the FTP server
    of ``--ftp``, then each ``--url``. A user in a URL is written as ``user``, a
    password never: the entry reads it from :data:`PASSWORD_ENVS` (an SFTP server
    with ``ssh_key`` logs in with the key instead)."""
    entries: list[dict[str, Any]] = [{"url": new.to or str(delivery_folder(new.monitor_name))}]
    targets = [split_ftp_url(new.ftp_url)] if new.ftp_url else []
    targets += [split_destination_url(url) for url in new.urls]
    for target in targets:
        entry: dict[str, Any] = {"url": target.url}
        if target.user:
            entry["user"] = target.user
        if target.kind == "sftp" and new.ssh_key:
            entry["ssh_key"] = new.ssh_key
        elif target.user or target.dropped_password is not None:
            entry["password_env"] = PASSWORD_ENVS[target.kind]
        entries.append(entry)
    return entries


def _comment(text: str, indent: str = "# ") -> list[str]:
    return textwrap.wrap(
        text.replace("`", ""),
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _render_table(
    table: Table,
    values: dict[str, Any],
    *,
    header: str | None = None,
    commented: bool = False,
    all_options: bool = True,
    defaults: Any = None,
    leave_out: tuple[str, ...] = (),
) -> list[str]:
    """``table`` as TOML: its header, then each option under its doc, set (``values``)
    or commented out at its default. ``commented`` comments the whole table out."""
    lines: list[str] = []
    header = table.header if header is None else header
    if header:
        lines.append("")
        if all_options:
            lines += _comment(table.doc[:1].upper() + table.doc[1:])
        lines.append(("# " if commented else "") + header)
    for f in scalar_options(table):
        key = toml_name(f)
        unit = f.metadata.get("kind")
        if key in values:
            lines += _comment(f.metadata.get("doc", ""))
            line = f"{key} = {toml_value(values[key], unit)}"
            lines.append(("# " if commented else "") + line)
            continue
        if not all_options or key in leave_out:
            continue
        value = getattr(defaults, f.name) if defaults is not None else default_of(f)
        if (value in (None, "", [], {}) and "example" in f.metadata) or value is None:
            value = placeholder(table.cls, f)
        lines += _comment(f.metadata.get("doc", ""))
        lines.append(f"# {key} = {toml_value(value, unit)}")
    return lines


def render(new: NewMonitor, provider: Provider | None = None) -> str:
    """The TOML text of the config for ``new``."""
    provider = provider or guess_provider(new.address)
    source = source_values(new, provider)
    lines = [
        f"# exportmon monitor {toml_string(new.monitor_name)}: export {new.export_id} "
        f"mailed to {new.address}",
        "# Written by `exportmon generate`, every option under its doc; commented ones",
        "# show their default or an example. The reference: docs/config.md.",
        "# Check it with: exportmon fetch --dry-run -c <this file>",
        "",
    ]
    for table in layout():
        if table.cls.__name__ == "DeliverConfig":
            lines += ["", "# (The older [deliver] table is described in docs/config.md.)"]
            continue
        if table.name == "":
            lines += _render_table(table, {"ids": [new.export_id]})
        elif table.name == "source":
            oauth = source.get("auth") == "oauth2"
            block = _render_table(
                table,
                source,
                defaults=SourceConfig(kind="imap", host=provider.host),
                # An OAuth2 sign-in has no password: no line invites one.
                leave_out=("password", "password_env", "password_command") if oauth else (),
            )
            note = [*(f"# {line}" for line in provider.note.splitlines())]
            lines += [*block[:3], f"# {provider.name}", *note, *block[3:]]
        elif table.name == "deliver":
            first, *more = destination_values(new)
            lines += _render_table(table, first)
            for entry in more:
                lines += _render_table(table, entry, all_options=False)
        elif table.name.startswith("exports."):
            lines += _render_table(table, {}, header=f"[exports.{new.export_id}]", commented=True)
        else:
            commented = table.array or table.name == "csv"
            lines += _render_table(table, {}, commented=commented)
    return "\n".join(lines) + "\n"


def check_rendered(text: str, path: Path) -> None:
    """Load ``text`` as the config at ``path`` would be loaded; :class:`ConfigError`
    (saying nothing was written) when it does not load."""
    from exportmon.config.load import parse

    try:
        parse(tomllib.loads(text), path=path)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug in the renderer
        raise ConfigError(f"the config would not be valid TOML: {exc}", path=path) from None
    except ConfigError as exc:
        message = exc.message.removeprefix(f"{path}: ")
        hint = f"{exc.hint}; nothing was written" if exc.hint else "nothing was written"
        raise ConfigError(message, path=path, hint=hint) from None


def write(new: NewMonitor, *, directory: Path | None = None, force: bool = False) -> Path:
    """Write the config for ``new`` with mode 0600 and return its path.

    Refuses to replace an existing file unless ``force``; writes nothing when the
    text would not load.
    """
    path = config_path(new, directory)
    if path.exists() and not force:
        raise ConfigError(
            "a monitor config already exists here",
            path=path,
            hint="pass --force to replace it, or --name to write another",
        )
    text = render(new)
    check_rendered(text, path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old_umask = os.umask(0o077)
    try:
        with atomic_write(path, suffix=".tmp") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text.encode("utf-8"))
    finally:
        os.umask(old_umask)
    return path
