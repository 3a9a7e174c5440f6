"""`exportmon push-ftp`: deliver files to an FTP/FTPS server (or a local folder), atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.deliver import deliver_items, destinations, settle_exports
from exportmon.actions.tracking import Owner, export_of_download, file_record
from exportmon.actions.unzip import record_unpacked, unpack
from exportmon.commands.pipeio import Emitter, InputItem, output_format, read_inputs
from exportmon.commands.steps import (
    JsonOption,
    NullOption,
    StepRun,
    SubDirsOption,
    paths_argument,
    step_run,
)
from exportmon.config.schema import MonitorConfig, Overwrite
from exportmon.deliver import OVERWRITE_POLICIES, Destination, Outgoing, delivery_order
from exportmon.deliver.ftp import FtpDestination
from exportmon.deliver.local import LocalDestination
from exportmon.errors import ConfigError, ExportmonError, UsageError
from exportmon.files.names import relative_target
from exportmon.hooks.credentials import SecretSource, resolve
from exportmon.ledger import File
from exportmon.log import get_logger, monitor_context
from exportmon.units import parse_duration

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon push-ftp --url ftps://ftp.example.com:21 --dir in/exports --user u \\
      --password-env FTP_PASS export/*.csv

  exportmon fetch | exportmon unzip | exportmon push-ftp          # the monitor's \\[deliver]

  exportmon push-ftp --to /srv/integration/in --order organizations,sites x/*.csv

Each file is written as <name>.in_progress and renamed once complete (remote size
checked), so readers never see a partial file. Prints where each file went (URLs
without credentials). --to delivers into a local folder the same way.
"""

OverwriteChoice = Enum(  # type: ignore[misc]
    "OverwriteChoice", {name: name for name in OVERWRITE_POLICIES}, type=str
)


def register(app: typer.Typer) -> None:
    app.command("push-ftp", epilog=EPILOG)(push_ftp_command)


@dataclass
class _Group:
    """Files that belong to the same monitor folder (or to none)."""

    owner: Owner | None
    monitor: MonitorConfig | None
    items: list[tuple[Outgoing, File | None]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)


def push_ftp_command(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, paths_argument("Files to deliver")] = None,
    url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="ftp://host[:port] or ftps://host[:port] (explicit TLS)."),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option("--dir", metavar="DIR", help="Folder on the server, created if missing."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="FTP user name.")] = None,
    password_env: Annotated[
        str | None, typer.Option(metavar="VAR", help="Environment variable with the password.")
    ] = None,
    password_command: Annotated[
        str | None, typer.Option(metavar="CMD", help="Command that prints the password.")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help="CA certificate(s) to verify FTPS with.")
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Deliver into this local folder.")
    ] = None,
    overwrite: Annotated[
        OverwriteChoice | None,  # type: ignore[valid-type]
        typer.Option(
            help="replace, keep (leave an existing file), or timestamp (a new time-stamped "
            "name each time). Default: the monitor's, else replace.",
            show_default=False,
        ),
    ] = None,
    sub_dirs: SubDirsOption = None,
    order: Annotated[
        str | None,
        typer.Option(
            metavar="TYPES", help="Export types delivered first, e.g. organizations,sites."
        ),
    ] = None,
    active: Annotated[
        bool, typer.Option("--active", help="Active FTP instead of passive.")
    ] = False,
    retries: Annotated[
        int | None, typer.Option(metavar="N", help="Retries after a lost connection (default 3).")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Network timeout (default 60s).")
    ] = None,
    null: NullOption = False,
    as_json: JsonOption = False,
) -> None:
    """Deliver files to an FTP/FTPS server or a local folder, never showing partial files.

    With --url and/or --to the files go there; without, to the \\[deliver]
    destinations of the monitor they belong to (or the one chosen with --config).
    Inside a monitor's state folder every delivery is recorded in its ledger; a file
    already delivered to a destination is skipped, and an export whose files are
    all delivered is marked delivered so its mail can be archived.
    """
    emitter = Emitter(output_format(null, as_json))
    policy = overwrite.value if overwrite is not None else None
    flag_destinations = _flag_destinations(
        url, directory, user, password_env, password_command, ca_file, to, policy, active,
        retries, timeout,
    )  # fmt: skip
    order_list = [kind.strip() for kind in order.split(",") if kind.strip()] if order else None
    with step_run(ctx) as step:
        groups: dict[Path | None, _Group] = {}
        for item in read_inputs(paths, null=null):
            try:
                _add(groups, step, item, sub_dirs)
            except ExportmonError as exc:
                step.report(exc)
        for group in groups.values():
            monitor = group.monitor
            with monitor_context(
                monitor.name if monitor else "", monitor.dirs.log if monitor else None
            ):
                try:
                    targets = flag_destinations or _monitor_destinations(monitor, policy)
                except ExportmonError as exc:  # no destination, or no password for it
                    step.report(exc)
                    continue
                if order_list is not None:
                    wanted = order_list
                elif monitor and monitor.destinations:
                    wanted = monitor.destinations[0].order
                else:
                    wanted = []
                items = delivery_order(group.items, wanted, name=lambda pair: pair[0].name)
                for destination in targets:
                    _deliver(step, emitter, group, destination, items, keep_order=bool(wanted))
                if group.owner is not None:
                    rows = {file.export_row for _, file in group.items if file and file.export_row}
                    for export in settle_exports(group.owner.ledger, rows):
                        log.info("export %s is delivered", export.file_name or export.key)


def _deliver(
    step: StepRun,
    emitter: Emitter,
    group: _Group,
    destination: Destination,
    items: list[tuple[Outgoing, File | None]],
    *,
    keep_order: bool,
) -> None:
    """Deliver a group's files to one destination, print where each went, log the result."""
    delivered, failures = deliver_items(
        destination,
        items,
        ledger=group.owner.ledger if group.owner else None,
        progress=step.progress,
        keep_order=keep_order,
    )
    for done in delivered:
        emitter.emit(
            done.placed.location,
            source=str(done.item.source),
            name=done.item.name,
            destination=destination.label,
            target=done.placed.target,
            bytes=done.placed.bytes,
            earlier=done.earlier,
            kept=done.placed.kept,
        )
    for failure in failures:
        step.report(failure)
    if delivered and not failures:
        log.info(
            "Copied %d file(s) from '%s' to '%s'",
            len(delivered),
            _origin(group),
            destination.display,
        )


def _add(
    groups: dict[Path | None, _Group], step: StepRun, item: InputItem, sub_dirs: bool | None
) -> None:
    """File ``item`` under its monitor folder, with its ledger record when there is one."""
    owner, monitor = step.locate(item.path)
    key = owner.root if owner else None
    group = groups.setdefault(key, _Group(owner, monitor))
    record = file_record(owner.ledger, item.path) if owner else None
    if owner is not None and record is None:
        record = _register_download(owner, item.path, monitor)
    if record is not None:
        name = record.name
    elif isinstance(item.info.get("name"), str):
        name = item.info["name"]
    else:
        split = sub_dirs if sub_dirs is not None else bool(monitor and monitor.sub_dirs)
        name = relative_target(item.path.name, sub_dirs=split)
    group.items.append(
        (Outgoing.from_path(item.path, name, record.sha256 if record else None), record)
    )
    group.sources.append(item.path)


def _register_download(owner: Owner, path: Path, monitor: MonitorConfig | None) -> File | None:
    """A download piped straight into push-ftp (no unzip step): record it as its own
    deliverable file, so its delivery counts for the export."""
    export = export_of_download(owner.ledger, path)
    if export is None or export.state not in ("new", "downloaded"):
        return None
    files = unpack(path, unzip=False, sub_dirs=False)
    record_unpacked(owner.ledger, export, files)
    return file_record(owner.ledger, path)


def _origin(group: _Group) -> str:
    """What the log line says the files came from: their download, else their folder."""
    if group.owner is not None:
        rows = {file.export_row for _, file in group.items if file and file.export_row}
        if len(rows) == 1:
            export = group.owner.ledger.export(rows.pop())
            if export is not None and export.download_path:
                return export.download_path
    return os.path.commonpath([str(source.absolute().parent) for source in group.sources])


def _monitor_destinations(
    monitor: MonitorConfig | None, overwrite: str | None
) -> Sequence[Destination]:
    if monitor is None:
        raise UsageError(
            "no destination: give --url and/or --to",
            hint="or deliver files of a monitor that has deliver.to or deliver.ftp_url",
        )
    configs = monitor.destinations
    if overwrite is not None:
        configs = [replace(config, overwrite=overwrite) for config in configs]
    found = destinations(configs)
    if not found:
        raise ConfigError(
            "no destination configured",
            path=monitor.path,
            key="deliver",
            hint="set deliver.to or deliver.ftp_url, or give --url / --to",
        )
    return found


def _flag_destinations(
    url: str | None,
    directory: str | None,
    user: str | None,
    password_env: str | None,
    password_command: str | None,
    ca_file: Path | None,
    to: Path | None,
    overwrite: Overwrite | None,
    active: bool,
    retries: int | None,
    timeout: str | None,
) -> list[Destination]:
    """The destinations given on the command line (empty: use the monitor's)."""
    ftp_only = {
        "--dir": directory,
        "--user": user,
        "--password-env": password_env,
        "--password-command": password_command,
        "--ca-file": ca_file,
    }
    if url is None:
        stray = [flag for flag, value in ftp_only.items() if value is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)} need --url")
    if password_env and password_command:
        raise UsageError("give the password one way: --password-env or --password-command")
    if retries is not None and retries < 0:
        raise UsageError("--retries must not be negative")
    found: list[Destination] = []
    policy = overwrite or "replace"
    if to is not None:
        found.append(LocalDestination(to, overwrite=policy))
    if url is not None:
        password = None
        if password_env or password_command:
            source = SecretSource("--password", env=password_env, command=password_command)
            password = resolve(source)
        elif user:
            raise UsageError(
                f"no password for FTP user {user}",
                hint="use --password-env VAR or --password-command CMD (never on the command line)",
            )
        if ca_file is not None and not ca_file.is_file():
            raise UsageError(f"--ca-file: file not found: {ca_file}")
        try:
            seconds = parse_duration(timeout) if timeout is not None else 60.0
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
        found.append(
            FtpDestination(
                url,
                directory or ".",
                user=user,
                password=password,
                ca_file=ca_file,
                passive=not active,
                timeout=seconds,
                retries=3 if retries is None else retries,
                overwrite=policy,
            )
        )
    return found
