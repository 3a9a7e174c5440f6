"""`exportmon push-ftp` (alias `push`): deliver files to any destination, atomically.

Destinations are URLs, as in ``[[deliver]]``: ``--to DIR`` (a local folder),
``--url ftp://``, ``ftps://``, ``sftp://`` or ``https://``, each repeatable. Each
is opened once for the whole batch (one login), whatever the number of files and
exports piped in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.deliver import (
    Batch,
    Delivered,
    Outcome,
    deliver_batches,
    settle_exports,
    unreachable,
)
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
from exportmon.config.schema import DestinationConfig, MonitorConfig, Overwrite
from exportmon.deliver import OVERWRITE_POLICIES, Destination, Outgoing, delivery_order
from exportmon.deliver.kinds import open_destination
from exportmon.deliver.signals import export_name
from exportmon.deliver.urls import parse_destination_url
from exportmon.errors import ConfigError, DeliveryError, ExportmonError, UsageError
from exportmon.files.names import relative_target
from exportmon.ledger import File
from exportmon.log import get_logger, monitor_context
from exportmon.signals import checkpoint, stop_event
from exportmon.units import parse_duration

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon push-ftp --url ftps://ftp.example.com:21 --dir in/exports --user u \\
      --password-env FTP_PASS export/*.csv

  exportmon fetch | exportmon unzip | exportmon push          # the monitor's destinations

  exportmon push --to /srv/in --url sftp://u@sftp.example.com/in --ssh-key ~/.ssh/id x/*.csv

  # Blackboard: wait until the records are processed, exit 1 on errors
  LEARN=https://learn.example.edu/endpoint
  exportmon push --url $LEARN/person/store --user i --password-env LEARN_PASSWORD \\
      --reference 'code (?P<ref>[0-9a-f]{32})' \\
      --status-url "$LEARN/dataSetStatus/{reference}" \\
      --status-done 'queuedCount == 0' --status-fail 'errorCount > 0' x/people.txt

  exportmon push --to /srv/in --trigger export --manifest json x/*.csv

Each file is written under a temporary name (<name>.in_progress) and renamed once
complete (remote size checked), so readers never see a partial file. Prints where
each file went (URLs without credentials). --url and --to may be given several
times; each destination gets one login for all the files.
"""

OverwriteChoice = Enum(  # type: ignore[misc]
    "OverwriteChoice", {name: name for name in OVERWRITE_POLICIES}, type=str
)


class MethodChoice(str, Enum):
    POST = "POST"
    PUT = "PUT"


class BodyChoice(str, Enum):
    raw = "raw"
    multipart = "multipart"


class TriggerChoice(str, Enum):
    file = "file"
    export = "export"


class ManifestChoice(str, Enum):
    json = "json"
    csv = "csv"


def register(app: typer.Typer) -> None:
    app.command("push-ftp", epilog=EPILOG)(push_ftp_command)


@dataclass
class _Group:
    """Files that belong to the same monitor folder (or to none)."""

    owner: Owner | None
    monitor: MonitorConfig | None
    items: list[tuple[Outgoing, File | None]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)


@dataclass
class _Target:
    """A destination opened for this command, and the entry it was opened from."""

    config: DestinationConfig
    destination: Destination
    #: Why it gets no more files in this batch (a refused login, a dead server).
    dead: ExportmonError | None = None


def push_ftp_command(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, paths_argument("Files to deliver")] = None,
    urls: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="ftp://, ftps:// (explicit TLS), sftp:// or https:// destination; repeatable.",
        ),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option("--dir", metavar="DIR", help="FTP: folder on the server, created if missing."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Login name (FTP, SFTP, HTTPS).")] = None,
    password_env: Annotated[
        str | None, typer.Option(metavar="VAR", help="Environment variable with the password.")
    ] = None,
    password_command: Annotated[
        str | None, typer.Option(metavar="CMD", help="Command that prints the password.")
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="CA certificate(s) to verify FTPS/HTTPS with."),
    ] = None,
    to: Annotated[
        list[Path] | None,
        typer.Option("--to", metavar="DIR", help="Deliver into this local folder; repeatable."),
    ] = None,
    overwrite: Annotated[
        OverwriteChoice | None,
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
        bool, typer.Option("--active", help="FTP: active instead of passive mode.")
    ] = False,
    retries: Annotated[
        int | None, typer.Option(metavar="N", help="Retries after a lost connection (default 3).")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Network timeout (default 60s).")
    ] = None,
    ssh_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="SFTP: private key (OpenSSH or PEM).")
    ] = None,
    ssh_key_passphrase_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="SFTP: environment variable with the key's passphrase."),
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="SFTP: trusted host keys (default ~/.ssh/known_hosts)."),
    ] = None,
    host_key: Annotated[
        str | None, typer.Option(metavar="SHA256:...", help="SFTP: the one host key accepted.")
    ] = None,
    method: Annotated[
        MethodChoice | None,
        typer.Option(help="HTTPS: POST (default) or PUT.", show_default=False),
    ] = None,
    body: Annotated[
        BodyChoice | None,
        typer.Option(
            help="HTTPS: the file as the body (raw, default) or a form (multipart).",
            show_default=False,
        ),
    ] = None,
    headers: Annotated[
        list[str] | None,
        typer.Option("--header", metavar="'NAME: VALUE'", help="HTTPS: extra header; repeatable."),
    ] = None,
    token_env: Annotated[
        str | None, typer.Option(metavar="VAR", help="HTTPS: environment variable with a token.")
    ] = None,
    token_command: Annotated[
        str | None, typer.Option(metavar="CMD", help="HTTPS: command that prints a bearer token.")
    ] = None,
    ssh_key_passphrase_command: Annotated[
        str | None,
        typer.Option(metavar="CMD", help="SFTP: command that prints the key's passphrase."),
    ] = None,
    multipart_field: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="HTTPS: the form field of the file (default file)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERN",
            help="HTTPS: the processing reference in the answer: a regular expression with "
            "a group ref, or a JSON pointer (/id); printed with the file.",
        ),
    ] = None,
    temp_suffix: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Temporary name <name>TEXT (default .in_progress)."),
    ] = None,
    temp_prefix: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Temporary name TEXT<name>, e.g. '.'.")
    ] = None,
    temp_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR", help="Write files in DIR first (same disk or server), then move them."
        ),
    ] = None,
    trigger: Annotated[
        TriggerChoice | None,
        typer.Option(
            help="Write a trigger file after each file, or after each export's files.",
            show_default=False,
        ),
    ] = None,
    trigger_name: Annotated[
        str | None,
        typer.Option(
            metavar="TEMPLATE", help="The trigger's name (default {name}.done; also {export})."
        ),
    ] = None,
    trigger_content: Annotated[
        bool,
        typer.Option("--trigger-content", help="Write rows and SHA-256 into the trigger."),
    ] = False,
    manifest: Annotated[
        ManifestChoice | None,
        typer.Option(
            help="Write a manifest of each export's files (sizes, rows, SHA-256) last.",
            show_default=False,
        ),
    ] = None,
    manifest_name: Annotated[
        str | None,
        typer.Option(
            metavar="TEMPLATE", help="The manifest's name (default {export}.manifest.{format})."
        ),
    ] = None,
    status_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="HTTPS: wait until this URL (may hold {reference}) says each file is "
            "processed; exit 1 if it failed.",
        ),
    ] = None,
    status_done: Annotated[
        str | None,
        typer.Option(metavar="CONDITION", help="HTTPS: when processing is done: queuedCount == 0."),
    ] = None,
    status_fail: Annotated[
        str | None,
        typer.Option(metavar="CONDITION", help="HTTPS: when it failed, e.g. errorCount > 0."),
    ] = None,
    status_warn: Annotated[
        str | None,
        typer.Option(metavar="CONDITION", help="HTTPS: when it warned, e.g. warningCount > 0."),
    ] = None,
    status_interval: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="HTTPS: time between status polls (default 30s)."),
    ] = None,
    status_timeout: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="HTTPS: stop waiting after this (default 24h)."),
    ] = None,
    null: NullOption = False,
    as_json: JsonOption = False,
) -> None:
    """Deliver files to folders, FTP/FTPS, SFTP or HTTPS, never showing partial files.

    With --url and/or --to the files go there; without, to the destinations of the
    monitor they belong to (or the one chosen with --config).
    Inside a monitor's state folder every delivery is recorded in its ledger; a file
    already delivered to a destination is skipped, and an export that reached every
    destination of its monitor is marked delivered so its mail can be archived
    (a delivery elsewhere is recorded, but settles nothing).
    """
    emitter = Emitter(output_format(null, as_json))
    policy = overwrite.value if overwrite is not None else None
    order_list = [kind.strip() for kind in order.split(",") if kind.strip()] if order else None
    configs = flag_configs(
        _Flags(
            urls=list(urls or []), directory=directory, user=user, password_env=password_env,
            password_command=password_command, ca_file=ca_file, to=list(to or []),
            overwrite=policy, order=order_list, active=active, retries=retries,
            timeout=timeout, ssh_key=ssh_key, ssh_key_passphrase_env=ssh_key_passphrase_env,
            known_hosts=known_hosts, host_key=host_key,
            method=method.value if method is not None else None,
            body=body.value if body is not None else None, headers=list(headers or []),
            token_env=token_env, token_command=token_command,
            ssh_key_passphrase_command=ssh_key_passphrase_command,
            multipart_field=multipart_field, reference=reference, temp_suffix=temp_suffix,
            temp_prefix=temp_prefix, temp_dir=temp_dir,
            trigger=trigger.value if trigger is not None else None, trigger_name=trigger_name,
            trigger_content=trigger_content,
            manifest=manifest.value if manifest is not None else None,
            manifest_name=manifest_name, status_url=status_url, status_done=status_done,
            status_fail=status_fail, status_warn=status_warn, status_interval=status_interval,
            status_timeout=status_timeout,
        )
    )  # fmt: skip
    flag_targets = [_open(config, standalone=True) for config in configs]
    with step_run(ctx) as step:
        groups: dict[Path | None, _Group] = {}
        for item in read_inputs(paths, null=null):
            try:
                _add(groups, step, item, sub_dirs)
            except ExportmonError as exc:
                step.report(exc)
        try:
            for group in groups.values():
                monitor = group.monitor
                with monitor_context(
                    monitor.name if monitor else "", monitor.dirs.log if monitor else None
                ):
                    _push_group(step, emitter, group, flag_targets, policy, order_list)
        finally:
            for target in flag_targets:
                target.destination.close()


def _push_group(
    step: StepRun,
    emitter: Emitter,
    group: _Group,
    flag_targets: list[_Target],
    policy: str | None,
    order_list: list[str] | None,
) -> None:
    """Deliver one monitor folder's files to each destination, settle what is complete."""
    if flag_targets:
        targets = flag_targets
    else:
        try:
            targets = _monitor_targets(group, policy)
        except ExportmonError as exc:  # no destination, or no password for it
            step.report(exc)
            return
    try:
        for target in targets:
            wanted = order_list if order_list is not None else target.config.order
            batches = _batches(group, wanted)
            if target.dead is not None:
                step.report(_skipped(target, sum(len(b.items) for b in batches)))
                continue
            outcomes = deliver_batches(
                target.destination,
                batches,
                config=target.config,
                progress=step.progress,
                connected=True,
            )
            _tell(step, emitter, group, target, outcomes, follow=bool(flag_targets))
    finally:
        if not flag_targets:
            for target in targets:
                target.destination.close()
    if group.owner is not None:
        rows = {file.export_row for _, file in group.items if file and file.export_row}
        for export in settle_exports(group.owner.ledger, rows, group.monitor):
            log.info("export %s is delivered", export.file_name or export.key)


def _batches(group: _Group, wanted: Sequence[str]) -> list[Batch]:
    """The group's files as one batch per export (files outside any ledger: one more),
    each in delivery order."""
    ledger = group.owner.ledger if group.owner else None
    by_export: dict[int | None, list[tuple[Outgoing, File | None]]] = {}
    for pair in group.items:
        file = pair[1]
        by_export.setdefault(file.export_row if file else None, []).append(pair)
    batches = []
    for row, items in by_export.items():
        export = ledger.export(row) if ledger is not None and row is not None else None
        name = None if export is not None else _folder_name(group)
        batches.append(
            Batch(
                delivery_order(
                    items, wanted, name=lambda pair: pair[0].name, type=lambda pair: pair[0].type
                ),
                export=export,
                name=name,
                keep_order=bool(wanted),
                ledger=ledger,
            )
        )
    return batches


def _folder_name(group: _Group) -> str:
    """What ``{export}`` names for files outside any export: their common folder."""
    if not group.sources:
        return "export"
    common = os.path.commonpath([str(source.absolute().parent) for source in group.sources])
    return export_name(Path(common).name, "export")


def _tell(
    step: StepRun,
    emitter: Emitter,
    group: _Group,
    target: _Target,
    outcomes: list[Outcome],
    *,
    follow: bool,
) -> None:
    """Print where each file went; one error line for the destination, else one info line.

    With ``follow`` (a ``--status-url`` of the command line: no ``run`` polls it), a
    file the receiving system reports on is printed once it has processed it
    (:func:`_follow`)."""
    destination = target.destination
    merged = Outcome(destination)
    for outcome in outcomes:
        merged.delivered += outcome.delivered
        merged.failures += outcome.failures
        merged.skipped += outcome.skipped
    waiting = []
    for done in merged.delivered:
        if follow and done.placed.submitted and not done.earlier:
            waiting.append(done)
        else:
            _emit(emitter, destination, done)
    if waiting:
        _follow(step, emitter, group, target, waiting)
    error = merged.error()
    if error is not None:
        step.report(error)
        if any(unreachable(failure) for failure in merged.failures):
            target.dead = error
        return
    if merged.delivered:
        log.info(
            "Copied %d file(s) from '%s' to '%s'",
            len(merged.delivered),
            _origin(group),
            destination.display,
        )


def _emit(
    emitter: Emitter, destination: Destination, done: Delivered, **processing: object
) -> None:
    extra = {"reference": done.placed.reference} if done.placed.reference else {}
    emitter.emit(
        done.placed.location,
        source=str(done.item.source),
        name=done.item.name,
        destination=destination.label,
        target=done.placed.target,
        bytes=done.placed.bytes,
        earlier=done.earlier,
        kept=done.placed.kept,
        **extra,
        **processing,
    )


def _follow(
    step: StepRun, emitter: Emitter, group: _Group, target: _Target, waiting: list[Delivered]
) -> None:
    """Poll the status of each file in ``waiting`` every ``status_interval`` until the
    receiving system has decided on it or ``status_timeout`` has passed; print each file
    processed, report each failed one, and record the outcome in the ledger of files
    inside a monitor's folder."""
    from exportmon.actions.status_tracking import judge_status, record_verdict
    from exportmon.deliver.https import HttpsDestination

    destination, config = target.destination, target.config
    assert isinstance(destination, HttpsDestination)
    records = {id(item): file for item, file in group.items}
    submitted = datetime.now(timezone.utc)
    interval = max(config.status_interval or 0.0, 0.1)
    while waiting:
        if stop_event().wait(interval):
            checkpoint()  # raises: the files were taken, their processing is unknown
        moment = datetime.now(timezone.utc)
        for done in list(waiting):
            verdict = judge_status(
                destination,
                config,
                done.placed.reference,
                done.placed.target,
                submitted=submitted,
                now=moment,
            )
            if not verdict.decided:
                continue
            waiting.remove(done)
            file = records.get(id(done.item))
            if group.owner is not None and file is not None:
                delivery = group.owner.ledger.delivered(file.id, destination.label)
                if delivery is not None:
                    record_verdict(group.owner.ledger, delivery.id, verdict)
            if verdict.status in ("failed", "timeout"):
                step.report(DeliveryError(verdict.error or verdict.status, retryable=False))
                continue
            _emit(
                emitter, destination, done, processing=verdict.status, status=verdict.fields or {}
            )


def _skipped(target: _Target, count: int) -> ExportmonError:
    """The line for files not tried because the destination already failed this batch."""
    return DeliveryError(
        f"{count} more file(s) not delivered to {target.destination.display}: it failed "
        "earlier in this batch"
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
        (
            Outgoing.from_path(
                item.path,
                name,
                record.sha256 if record else None,
                record.export_type if record else None,
            ),
            record,
        )
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


def _open(config: DestinationConfig, *, standalone: bool) -> _Target:
    """Open ``config`` (secrets resolved, nothing connected). ``standalone``: nothing
    will retry a failure here, so no message may promise that."""
    try:
        destination = open_destination(config)
    except ImportError as exc:
        kind = parse_destination_url(config.url).kind
        raise UsageError(
            f"{kind}:// destinations are not available in this install ({exc.name} is missing)",
            hint="install exportmon with its optional dependencies",
        ) from None
    if standalone and hasattr(destination, "retried_later"):
        destination.retried_later = False
    return _Target(config, destination)


def _monitor_targets(group: _Group, overwrite: str | None) -> list[_Target]:
    monitor = group.monitor
    if monitor is None:
        raise UsageError(
            "no destination: give --url and/or --to",
            hint="or deliver files of a monitor that has [[deliver]] destinations",
        )
    configs = monitor.destinations
    if overwrite is not None:
        configs = [replace(config, overwrite=overwrite) for config in configs]  # type: ignore[arg-type]
    if not configs:
        raise ConfigError(
            "no destination configured",
            path=monitor.path,
            key="deliver",
            hint="add a [[deliver]] entry with a url, or give --url / --to",
        )
    # Files inside a monitor's folder are retried by `run`; others by nobody.
    return [_open(config, standalone=group.owner is None) for config in configs]


@dataclass
class _Flags:
    """The destination options of the command line."""

    urls: list[str]
    to: list[Path]
    directory: str | None = None
    user: str | None = None
    password_env: str | None = None
    password_command: str | None = None
    ca_file: Path | None = None
    overwrite: Overwrite | None = None
    order: list[str] | None = None
    active: bool = False
    retries: int | None = None
    timeout: str | None = None
    ssh_key: Path | None = None
    ssh_key_passphrase_env: str | None = None
    known_hosts: Path | None = None
    host_key: str | None = None
    method: str | None = None
    body: str | None = None
    headers: list[str] = field(default_factory=list)
    token_env: str | None = None
    token_command: str | None = None
    ssh_key_passphrase_command: str | None = None
    multipart_field: str | None = None
    reference: str | None = None
    temp_suffix: str | None = None
    temp_prefix: str | None = None
    temp_dir: str | None = None
    trigger: str | None = None
    trigger_name: str | None = None
    trigger_content: bool = False
    manifest: str | None = None
    manifest_name: str | None = None
    status_url: str | None = None
    status_done: str | None = None
    status_fail: str | None = None
    status_warn: str | None = None
    status_interval: str | None = None
    status_timeout: str | None = None


#: The ``[[deliver]]`` keys the options above set as they are, on every entry they
#: apply to (the rest are set one by one in :func:`flag_configs`).
_PLAIN_KEYS = (
    "ssh_key_passphrase_command",
    "multipart_field",
    "reference",
    "temp_suffix",
    "temp_prefix",
    "temp_dir",
    "trigger",
    "trigger_name",
    "trigger_content",
    "manifest",
    "manifest_name",
    "status_url",
    "status_done",
    "status_fail",
    "status_warn",
)
#: Where files are written under a temporary name and signals can be placed.
_RENAMING = ("file", "ftp", "ftps", "sftp")

#: Which URL kinds each per-kind option applies to, and what the error calls them.
_PER_KIND: dict[str, tuple[tuple[str, ...], str]] = {
    "directory": (("ftp", "ftps"), "--dir"),
    "active": (("ftp", "ftps"), "--active"),
    "user": (("ftp", "ftps", "sftp", "https"), "--user"),
    "password_env": (("ftp", "ftps", "sftp", "https"), "--password-env"),
    "password_command": (("ftp", "ftps", "sftp", "https"), "--password-command"),
    "ca_file": (("ftps", "https"), "--ca-file"),
    "ssh_key": (("sftp",), "--ssh-key"),
    "ssh_key_passphrase_env": (("sftp",), "--ssh-key-passphrase-env"),
    "known_hosts": (("sftp",), "--known-hosts"),
    "host_key": (("sftp",), "--host-key"),
    "method": (("https",), "--method"),
    "body": (("https",), "--body"),
    "headers": (("https",), "--header"),
    "token_env": (("https",), "--token-env"),
    "token_command": (("https",), "--token-command"),
    "ssh_key_passphrase_command": (("sftp",), "--ssh-key-passphrase-command"),
    "multipart_field": (("https",), "--multipart-field"),
    "reference": (("https",), "--reference"),
    "temp_suffix": (_RENAMING, "--temp-suffix"),
    "temp_prefix": (_RENAMING, "--temp-prefix"),
    "temp_dir": (_RENAMING, "--temp-dir"),
    "trigger": (_RENAMING, "--trigger"),
    "trigger_name": (_RENAMING, "--trigger-name"),
    "trigger_content": (_RENAMING, "--trigger-content"),
    "manifest": (_RENAMING, "--manifest"),
    "manifest_name": (_RENAMING, "--manifest-name"),
    "status_url": (("https",), "--status-url"),
    "status_done": (("https",), "--status-done"),
    "status_fail": (("https",), "--status-fail"),
    "status_warn": (("https",), "--status-warn"),
    "status_interval": (("https",), "--status-interval"),
    "status_timeout": (("https",), "--status-timeout"),
}
_KIND_WORDS = {
    ("ftp", "ftps"): "an ftp:// or ftps:// --url",
    ("ftps", "https"): "an ftps:// or https:// --url",
    ("sftp",): "an sftp:// --url",
    ("https",): "an https:// --url",
    _RENAMING: "--to or an ftp://, ftps:// or sftp:// --url (HTTPS has no temporary names)",
}


def flag_configs(flags: _Flags) -> list[DestinationConfig]:
    """The destinations given on the command line as ``[[deliver]]`` entries (empty:
    use the monitor's); :class:`UsageError` for options that do not fit the URLs."""
    kinds = []
    for url in flags.urls:
        kind = parse_destination_url(url).kind
        if kind in ("file", "http"):
            raise UsageError(
                f"not an ftp:// or ftps://, sftp:// or https:// destination: {url!r}",
                hint="give a local folder with --to; plain http:// is not offered (use https://)",
            )
        kinds.append(kind)
    given = kinds + ["file"] * len(flags.to)
    for name, (applies, flag) in _PER_KIND.items():
        value = getattr(flags, name)
        if value in (None, False, []):
            continue
        if not given:
            raise UsageError(f"{flag} needs {'--to or ' if 'file' in applies else ''}--url")
        if not set(applies) & set(given):
            words = _KIND_WORDS.get(applies, "a remote --url")
            raise UsageError(f"{flag} needs {words}")
    if flags.password_env and flags.password_command:
        raise UsageError("give the password one way: --password-env or --password-command")
    if flags.token_env and flags.token_command:
        raise UsageError("give the token one way: --token-env or --token-command")
    if flags.retries is not None and flags.retries < 0:
        raise UsageError("--retries must not be negative")
    if flags.ca_file is not None and not flags.ca_file.is_file():
        raise UsageError(f"--ca-file: file not found: {flags.ca_file}")
    durations: dict[str, float] = {}
    for name in ("timeout", "status_interval", "status_timeout"):
        text = getattr(flags, name)
        try:
            if text is not None:
                durations[name] = parse_duration(text)
        except ValueError as exc:
            raise UsageError(f"{_flag_name(name)}: {exc}") from None
    seconds = durations.get("timeout", 60.0)
    headers = {}
    for header in flags.headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise UsageError(f"--header: expected 'Name: value', got {header!r}")
        headers[name.strip()] = value.strip()
    policy = flags.overwrite or "replace"
    found = [
        DestinationConfig(
            url=str(folder), overwrite=policy, order=list(flags.order or []), key="--"
        )
        for folder in flags.to
    ]
    for url, kind in zip(flags.urls, kinds, strict=True):
        parsed = parse_destination_url(url)
        if kind in ("ftp", "ftps"):
            if flags.directory is not None and parsed.path.strip("/"):
                raise UsageError(f"give the FTP folder in the URL or with --dir, not both: {url!r}")
            if flags.directory is not None:
                url = f"{kind}://{parsed.netloc}/{flags.directory}"
            user = flags.user or parsed.user
            if user and not (flags.password_env or flags.password_command):
                raise UsageError(
                    f"no password for FTP user {user}",
                    hint="use --password-env VAR or --password-command CMD "
                    "(never on the command line)",
                )
        entry = DestinationConfig(
            url=url,
            user=flags.user,
            password_env=flags.password_env,
            password_command=flags.password_command,
            ca_file=str(flags.ca_file) if flags.ca_file and kind in ("ftps", "https") else None,
            passive=not flags.active,
            timeout=seconds,
            retries=3 if flags.retries is None else flags.retries,
            overwrite=policy,
            order=list(flags.order or []),
            key="--",
        )
        if kind == "sftp":
            entry.ssh_key = str(flags.ssh_key.expanduser()) if flags.ssh_key else None
            entry.ssh_key_passphrase_env = flags.ssh_key_passphrase_env
            entry.host_key = flags.host_key
            if flags.known_hosts is not None:
                entry.known_hosts = str(flags.known_hosts.expanduser())
        if kind == "https":
            entry.token_env = flags.token_env
            entry.token_command = flags.token_command
            entry.headers = headers
            if flags.method:
                entry.method = flags.method  # type: ignore[assignment]
            if flags.body:
                entry.body = flags.body  # type: ignore[assignment]
            for name in ("status_interval", "status_timeout"):
                if name in durations:
                    setattr(entry, name, durations[name])
        found.append(entry)
    from exportmon.config.load import check_flag_destination

    for entry in found:
        kind = parse_destination_url(entry.url).kind
        for name in _PLAIN_KEYS:
            value = getattr(flags, name)
            if value not in (None, False) and kind in _PER_KIND[name][0]:
                setattr(entry, name, value)
        check_flag_destination(entry, _flag_name)
    return found


def _flag_name(key: str) -> str:
    """The option that sets ``[[deliver]]`` key ``key`` (``temp_suffix`` → ``--temp-suffix``)."""
    known = _PER_KIND.get(key)
    return known[1] if known else "--" + key.replace("_", "-")
