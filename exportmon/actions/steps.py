"""Running one step of an export and recording its failure, once, in the ledger;
retrying a failure once the config it happened under has changed."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import shlex
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
from exportmon.ledger import Export, Ledger, to_text
from exportmon.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: How to retry a failure now (one that no later run retries by itself, or sooner).
RETRY_FAILED = "exportmon run --once --retry-failed"
#: The states an export may fail in (it keeps its state when it fails).
UNFINISHED = ("new", "downloaded", "unpacked")


def retry_command(monitor: MonitorConfig) -> str:
    """The command that retries ``monitor``'s failed exports now (its config file
    named, under ``~`` when it is in the home folder)."""
    if monitor.path is None:
        return RETRY_FAILED
    path = str(monitor.path)
    home = str(Path.home())
    if home != "/" and path.startswith(home + "/"):
        path = "~" + path[len(home) :]
    return RETRY_FAILED.replace("exportmon", f"exportmon -c {shell_word(path)}", 1)


def shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell, a leading ``~/`` left for it to expand."""
    if word.startswith("~/"):
        return "~/" + shlex.quote(word[2:])
    return shlex.quote(word)


def not_retried(error: ExportmonError) -> str:
    """The one line of a failure no run retries by itself, saying how to retry it; it is
    recorded so, and so shown wherever the failure is (log, status, --json, report)."""
    if error.hint:
        return f"{error.message} ({error.hint}, then {RETRY_FAILED})"
    return f"{error.message} (once the cause is fixed: {RETRY_FAILED})"


def config_fingerprint(monitor: MonitorConfig) -> str:
    """A digest of the settings that decide how ``monitor`` works on an export: the
    ``[download]``, ``[zip]`` and ``[csv]`` tables, ``unzip``, ``sub_dirs`` and the
    destinations (``[[deliver]]``, secrets included).

    A failure records it, and a run retries the failure once it differs
    (:func:`retry_changed_config`). So it covers every setting a failure at any
    step can be caused by (a limit, ``allow_hosts``, a CA file, a destination's
    folder or login) and nothing else: an edit of the mailbox, alert or schedule
    settings retries no export, and neither does a comment or a reordering, since
    the loaded values are digested, not the file. An edit of a covered table that
    does not touch the cause retries each failed export once, no more.
    """
    work = {
        "download": monitor.download,
        "zip": monitor.zip,
        "csv": monitor.csv,
        "unzip": monitor.unzip,
        "sub_dirs": monitor.sub_dirs,
        "destinations": monitor.destinations,
    }
    text = json.dumps(_plain(work), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(value: object) -> object:
    """``value`` as JSON-ready data that is the same for the same settings in every
    process. Settings are dataclasses of plain values; anything else counts by its
    type alone, since its text may differ from process to process (an address) and
    would then retry every failure at every run."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(str(_plain(item)) for item in value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return f"<{type(value).__qualname__}>"


def retry_changed_config(
    monitor: MonitorConfig, ledger: Ledger, states: Sequence[str] = UNFINISHED
) -> list[Export]:
    """Make the failed exports (in ``states``) whose config has changed since they
    failed due now, saying so once for each; the run then retries them as it
    retries any failure that is due. Returns them."""
    fingerprint = config_fingerprint(monitor)
    released = ledger.failed_under_other_config(fingerprint, states)
    for export in released:
        log.info("config changed since %s failed; retrying", _describe(export))
        ledger.retry_export_now(export.id, fingerprint)
    return released


def changed_config_exports(
    monitor: MonitorConfig, ledger: Ledger, states: Sequence[str] = UNFINISHED
) -> list[Export]:
    """The failed exports :func:`retry_changed_config` would retry (for dry runs)."""
    return ledger.failed_under_other_config(config_fingerprint(monitor), states)


def _describe(export: Export) -> str:
    label = f"export {export.export_id}" if export.export_id else "export"
    return f"{label} ({export.file_name or export.key})"


def retry_time(monitor: MonitorConfig, error: ExportmonError) -> str | None:
    """When a failed export may be retried automatically: never for permanent errors."""
    if not error.retryable or monitor.retry_after is None:
        return None
    return to_text(datetime.now(timezone.utc) + timedelta(seconds=monitor.retry_after))


def as_exportmon_error(error: Exception) -> ExportmonError:
    """``error`` as an :class:`ExportmonError`: itself, or an "internal error" naming it
    (its traceback logged at DEBUG)."""
    if isinstance(error, ExportmonError):
        return error
    log.debug("internal error", exc_info=error)
    return ExportmonError(
        f"internal error {type(error).__name__}: {error}",
        hint="please report it with the output of -v",
    )


def attempt(
    monitor: MonitorConfig, ledger: Ledger, export: Export, step: str, work: Callable[[], T]
) -> T | None:
    """Run ``work`` (one step of ``export``); on an exportmon error record it and return None.

    The error is logged here, with the export it concerns, once per problem: at
    ERROR when the export fails at this step for the first time, at INFO ("still
    failing") when an automatic retry of an export already failing there fails
    again. A permanent failure (not ``retryable``) is always an ERROR: it is only
    tried again on request. The caller goes on with other exports.

    Whatever goes wrong while working on one export is that export's failure: any
    other exception (a bug, since input problems are raised as exportmon errors) is
    recorded the same way as an "internal error", its traceback logged at DEBUG, and
    retried by the same policy. Only stop requests (``BaseException``) propagate.
    """
    try:
        return work()
    except Exception as raised:
        error = as_exportmon_error(raised)
        retry_at = retry_time(monitor, error)
        message = error.one_line() if retry_at is not None else not_retried(error)
        # A permanent failure is retried only when asked (--retry-failed): say it
        # at ERROR every time, never as "still failing".
        again = export.error is not None and export.error_step == step and error.retryable
        failed = ledger.fail_export(
            export.id, step, message, retry_at, config=config_fingerprint(monitor)
        )
        if again:
            log.info(
                "%s still failing at %s (%d attempts): %s",
                _describe(export),
                step,
                failed.attempts,
                message,
            )
        else:
            log.error("%s failed at %s: %s", _describe(export), step, message)
        return None


@contextlib.contextmanager
def monitor_ledger(monitor: MonitorConfig, *, dry_run: bool = False) -> Iterator[Ledger]:
    """The monitor's ledger, its state folder created; a dry run creates nothing.

    A dry run of a monitor that never ran gets a throw-away ledger, so that
    looking changes nothing on disk.
    """
    path = monitor.dirs.ledger
    if dry_run and not path.exists():
        with (
            tempfile.TemporaryDirectory(prefix="exportmon-dry-run-") as scratch,
            Ledger.open(Path(scratch) / "ledger.sqlite") as ledger,
        ):
            yield ledger
        return
    if not dry_run:
        monitor.dirs.create()
    with Ledger.open(path) as ledger:
        yield ledger
