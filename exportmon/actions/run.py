"""``run``: everything a monitor does, once (cron) or watching the mailbox (a service).

One *cycle* of a monitor:

1. resume work an earlier process left unfinished (exports downloaded or
   unpacked but not delivered), straight from the ledger, without downloading or
   delivering again what is already done;
2. fetch: archive mails whose exports are delivered, poll for new export mails,
   download each export and take it at once through unpack (and rewrite) and
   delivery, on a worker thread while the next export downloads;
3. archive the mails this cycle delivered (once the worker is done with them);
4. raise and send alerts (failures, recoveries, missing exports, row counts);
5. prune old downloads when ``keep_downloads`` is set.

:func:`run_once` does one cycle under the monitor's lock. :func:`watch_monitor`
repeats cycles for as long as it is asked to, waiting in between with IMAP IDLE
(or polling), reconnecting with back-off after network errors, and stopping after
``exit_when_idle`` minutes without export mails. :func:`watch` runs one watcher
thread per monitor and reloads the configs on SIGHUP.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from exportmon.actions.alerts import process_alerts
from exportmon.actions.deliver import deliver_export
from exportmon.actions.fetch import (
    DOWNLOAD_STEP,
    archive_mails,
    download_export,
    fetch,
    redownload_if_gone,
    report_unreachable,
)
from exportmon.actions.monitor_run import monitor_run
from exportmon.actions.plan import resume_plan
from exportmon.actions.prune import prune
from exportmon.actions.status_tracking import next_poll
from exportmon.actions.steps import (
    as_exportmon_error,
    attempt,
    changed_config_exports,
    retry_changed_config,
)
from exportmon.actions.unzip import unpack_export
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ConfigError, ExportmonError, LockedError
from exportmon.hooks import credentials
from exportmon.ledger import Export, Ledger
from exportmon.log import get_logger, monitor_context
from exportmon.mail.source import MailSource, open_source
from exportmon.net.retry import Backoff, RetryPolicy
from exportmon.notify import heartbeat
from exportmon.progress import ProgressFactory
from exportmon.signals import Interrupted, Shutdown
from exportmon.units import format_duration, plural

log = get_logger(__name__)

#: The longest single wait for new mail; bounds how long a stop request can go unseen.
WAIT_SLICE = 5.0
#: Back-off after a failed connection: first wait, and the longest wait.
#: How long the watcher waits before reconnecting, growing from 1 s to 5 minutes.
RECONNECT = RetryPolicy(first=1.0, cap=300.0)
#: The least a watcher waits between cycles for a status poll (status_interval = 0).
MIN_POLL_WAIT = 1.0

#: The steps an export goes through, by the state each one starts from.
STEPS: tuple[tuple[str, str, Callable[..., Export]], ...] = (
    ("new", "download", download_export),
    ("downloaded", "unpack", unpack_export),
    ("unpacked", "deliver", deliver_export),
)


@dataclass
class RunOptions:
    """How ``run`` was asked to work."""

    retry_failed: bool = False
    archive: bool = True
    dry_run: bool = False
    progress: ProgressFactory | None = None
    #: Called with a short description of what a monitor is doing (live display).
    on_activity: Callable[[str, str], None] | None = None
    #: Called with each export as it is delivered.
    on_delivered: Callable[[MonitorConfig, Export], None] | None = None
    log_format: str = "text"


@dataclass
class CycleResult:
    """What one cycle of one monitor did."""

    monitor: str
    delivered: list[Export] = field(default_factory=list)
    downloaded: int = 0
    archived: int = 0
    new_mails: int = 0
    #: One line per failure (a mail, an export step, the mailbox, archiving).
    failures: list[str] = field(default_factory=list)
    #: The mailbox could not be read: in watch mode, reconnect.
    source_failed: bool = False
    alerts: int = 0
    planned: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def saw_exports(self) -> bool:
        """Whether export mails arrived or exports moved on (resets exit_when_idle)."""
        return bool(self.new_mails or self.downloaded or self.delivered)

    def counts(self) -> dict[str, Any]:
        return {
            "new_mails": self.new_mails,
            "downloaded": self.downloaded,
            "delivered": len(self.delivered),
            "archived": self.archived,
            "failed": len(self.failures),
            "alerts": self.alerts,
        }


def advance_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    options: RunOptions,
    shutdown: Shutdown | None = None,
) -> Export | None:
    """Take ``export`` through the steps still ahead of it; None if one failed.

    Each step records its own success; a failure is recorded once by
    :func:`~exportmon.actions.steps.attempt`. A stop request is honoured between
    steps, never in the middle of one.
    """
    if export.state in ("downloaded", "unpacked"):
        checked = attempt(
            monitor,
            ledger,
            export,
            DOWNLOAD_STEP,
            lambda: redownload_if_gone(monitor, ledger, export),
        )
        if checked is None:
            return None
        export = checked
    for state, step, work in STEPS:
        if export.state != state:
            continue
        if shutdown is not None and shutdown.requested:
            return export
        _tell(options, monitor, f"{step} {export.file_name or export.key}")
        done = attempt(
            monitor,
            ledger,
            export,
            step,
            partial(work, monitor, ledger, export, progress=options.progress),
        )
        if done is None:
            return None
        export = done
    return export


def run_cycle(
    monitor: MonitorConfig,
    ledger: Ledger,
    source: MailSource,
    options: RunOptions,
    shutdown: Shutdown | None = None,
) -> CycleResult:
    """One cycle of ``monitor`` (see the module docs) with an open ledger and source."""
    result = CycleResult(monitor.name)

    def stopping() -> bool:
        return shutdown is not None and shutdown.requested

    def follow(export: Export) -> None:
        if stopping():
            return
        finished = advance_export(monitor, ledger, export, options, shutdown)
        if finished is None:
            failed = ledger.export(export.id) or export
            if stopping() and failed.error is None:
                return  # stopped in the middle of a step, not failed: resumed next run
            result.failures.append(f"export {failed.export_id}: {failed.error}")
        elif finished.state == "delivered":
            result.delivered.append(finished)
            if options.on_delivered is not None:
                options.on_delivered(monitor, finished)

    if not options.dry_run:
        if not options.retry_failed:
            retry_changed_config(monitor, ledger)
        for export in ledger.due_exports(include_failed=options.retry_failed):
            if export.state in ("downloaded", "unpacked") and not stopping():
                # An export waiting for a receiving system's verdict comes back every
                # status poll; its polls say what happens (INFO per answer).
                waiting = bool(
                    ledger.processing_deliveries(
                        export_row=export.id, status="submitted", latest=True
                    )
                )
                log.log(
                    logging.DEBUG if waiting else logging.INFO,
                    "%s export %s (%s) from %s",
                    "polling the receiving system for" if waiting else "resuming",
                    export.export_id,
                    export.file_name or export.key,
                    export.state,
                )
                follow(export)

    _tell(options, monitor, "checking for new mail")
    # While one export is unpacked and delivered on a worker thread, the next one
    # downloads. The worker takes exports one at a time in download order, and the
    # next is handed over only when the one before is finished, so exports are
    # delivered in the same order as without the worker and at most one waits.
    with ThreadPoolExecutor(1, thread_name_prefix=f"deliver-{monitor.name}") as worker:
        following: list[Future[None]] = []

        def hand_over(export: Export) -> None:
            if following:
                following.pop().result()
            # The copied context keeps the monitor's name on the worker's log records.
            context = contextvars.copy_context()
            following.append(worker.submit(context.run, follow, export))

        fetched = fetch(
            monitor,
            ledger,
            source=source,
            dry_run=options.dry_run,
            retry_failed=options.retry_failed,
            archive=options.archive,
            progress=options.progress,
            on_downloaded=hand_over,
            stop=stopping,
            whole_plan=True,
        )
        if following:
            following.pop().result()
    result.new_mails = sum(1 for polled in fetched.mails if polled.outcome == "export")
    result.downloaded = len(fetched.downloaded)
    result.archived = len(fetched.archived)
    result.planned = fetched.planned
    result.source_failed = any(f.stage == "source" for f in fetched.failures)
    # A failed download is recorded by fetch; failures of later steps by follow().
    result.failures[:0] = [f.message for f in fetched.failures]
    if options.dry_run:
        resumed = ledger.due_exports(include_failed=options.retry_failed)
        if not options.retry_failed:
            resumed += changed_config_exports(monitor, ledger, ("downloaded", "unpacked"))
        for due in resumed:
            if due.state in ("downloaded", "unpacked"):
                name = due.file_name or due.key
                result.planned += resume_plan(monitor, name, due.export_id, due.state)
        return result

    # The mails of exports delivered in this cycle are settled even when stopping
    # (one quick move each); alerts and pruning wait for the next run.
    if options.archive and result.delivered and not result.source_failed:
        _tell(options, monitor, "archiving delivered mails")
        archive_failures: list[Any] = []
        try:
            archived = archive_mails(monitor, ledger, source, failures=archive_failures)
        except ConfigError:
            raise
        except ExportmonError as exc:
            # The mailbox went away: reported once per outage, and reconnected.
            report_unreachable(ledger, exc)
            result.failures.append(exc.one_line())
            result.source_failed = True
        else:
            result.archived += len(archived)
            result.failures += [f.message for f in archive_failures]

    if stopping():
        return result
    try:
        result.alerts = len(
            process_alerts(monitor, ledger, delivered=result.delivered, failures=result.failures)
        )
    except Exception as exc:  # alerts failing never undo the cycle's work
        log.error("alerts: %s", as_exportmon_error(exc).one_line())
    if monitor.keep_downloads:
        try:
            pruned = prune(monitor, ledger, monitor.keep_downloads, records=False)
        except Exception as exc:
            log.error("pruning old downloads: %s", as_exportmon_error(exc).one_line())
        else:
            if pruned.removed:
                log.info("pruned %s", plural(len(pruned.removed), "old download"))
    return result


def run_once(
    monitor: MonitorConfig,
    options: RunOptions,
    shutdown: Shutdown | None = None,
    *,
    source: MailSource | None = None,
) -> CycleResult:
    """One cycle of ``monitor`` under its lock, recorded as a run in its ledger.

    Raises :class:`LockedError` when another process works on the monitor, and
    :class:`ConfigError` when a secret cannot be had.
    """
    dry_run = options.dry_run
    with monitor_run(
        monitor, "run --once", dry_run=dry_run, log_format=options.log_format, shutdown=shutdown
    ) as run:
        result = None
        with heartbeat.recent_lines(monitor.name) as recent:
            if not dry_run:
                heartbeat.send(monitor.heartbeat, "start")
            try:
                with source if source is not None else open_source(monitor) as mail_source:
                    result = run_cycle(monitor, run.ledger, mail_source, options, shutdown)
                run.record(result)
            finally:
                if not dry_run:
                    _summarise(result)
                    _beat(monitor, result, list(recent.lines))
        return result


def _beat(monitor: MonitorConfig, result: CycleResult | None, lines: list[str]) -> None:
    """Tell the heartbeat service how the run or cycle went (never fails the run)."""
    failed = result is None or result.failed
    heartbeat.send(monitor.heartbeat, "failure" if failed else "success", lines)


def _summarise(result: CycleResult | None) -> None:
    if result is None:
        return
    if result.delivered or result.failures or result.downloaded:
        log.info(
            "%s delivered, %s archived, %s",
            plural(len(result.delivered), "export"),
            plural(result.archived, "mail"),
            plural(len(result.failures), "failure"),
        )


def _minutes(minutes: float) -> str:
    return f"{minutes:g} minute" + ("" if minutes == 1 else "s")


def _tell(options: RunOptions, monitor: MonitorConfig, activity: str) -> None:
    if options.on_activity is not None:
        options.on_activity(monitor.name, activity)


# --- watching -----------------------------------------------------------------------


@dataclass
class WatchOutcome:
    """How a monitor's watcher ended."""

    monitor: str
    cycles: int = 0
    delivered: int = 0
    failed_cycles: int = 0
    #: ``stopped`` (asked to), ``idle`` (exit_when_idle), ``locked``, ``config``,
    #: ``failed`` (the monitor's state cannot be used, e.g. a damaged ledger).
    reason: str = "stopped"


def watch_monitor(monitor: MonitorConfig, options: RunOptions, shutdown: Shutdown) -> WatchOutcome:
    """Watch one monitor until ``shutdown`` is requested or it has been idle too long.

    Keeps one connection to the mailbox, waits for new mail with IDLE where the
    server offers it (a cycle still runs every ``poll_interval`` in case a
    notification was missed), and reconnects with exponential back-off (1 s to
    5 min) when the server goes away, without ever giving up.
    """
    outcome = WatchOutcome(monitor.name)
    with monitor_context(monitor.name, None, options.log_format):
        try:
            with monitor_run(monitor, "run", log_format=options.log_format) as run:
                try:
                    _watch_loop(monitor, run.ledger, options, shutdown, outcome)
                finally:
                    run.failed = bool(outcome.failed_cycles)
                    run.counts = {
                        "cycles": outcome.cycles,
                        "delivered": outcome.delivered,
                        "ended": outcome.reason,
                    }
        except Interrupted:
            log.info("stopped; the next run resumes the unfinished work")
            outcome.reason = "stopped"
        except LockedError as exc:
            log.error("%s", exc.one_line())
            outcome.reason = "locked"
        except ConfigError as exc:
            log.error("%s", exc.one_line())
            outcome.reason = "config"
        except Exception as exc:  # this monitor cannot work (its ledger, its lock)
            log.error("%s", as_exportmon_error(exc).one_line())
            outcome.reason = "failed"
    return outcome


def _watch_loop(
    monitor: MonitorConfig,
    ledger: Ledger,
    options: RunOptions,
    shutdown: Shutdown,
    outcome: WatchOutcome,
) -> None:
    idle_limit = monitor.exit_when_idle * 60.0
    interval = max(1.0, monitor.poll_interval or 60.0)
    last_seen = time.monotonic()
    backoff = Backoff(RECONNECT)
    source: MailSource | None = None
    log.info(
        "watching %s%s",
        monitor.source.mailbox if monitor.source.kind in ("imap", "pop3") else monitor.source.path,
        f"; stopping after {_minutes(monitor.exit_when_idle)} without export mails"
        if idle_limit
        else "",
    )
    try:
        while not shutdown.requested:
            if source is None:
                source = open_source(monitor)
            try:
                with heartbeat.recent_lines(monitor.name) as recent:
                    result = run_cycle(monitor, ledger, source, options, shutdown)
            except ConfigError:
                raise
            except Exception as raised:  # this monitor's cycle failed; it watches on
                _cycle_failed(ledger, as_exportmon_error(raised), outcome)
                _reconnect_later(options, monitor, source, shutdown, backoff)
                source = None
                continue
            _beat(monitor, result, list(recent.lines))
            outcome.cycles += 1
            outcome.delivered += len(result.delivered)
            outcome.failed_cycles += bool(result.failed)
            if result.saw_exports:
                last_seen = time.monotonic()
            if result.source_failed:
                _reconnect_later(options, monitor, source, shutdown, backoff)
                source = None
                continue
            backoff.reset()
            if idle_limit and time.monotonic() - last_seen >= idle_limit:
                log.info("no export mails for %s: stopping", _minutes(monitor.exit_when_idle))
                outcome.reason = "idle"
                return
            _tell(options, monitor, "waiting for new mail")
            # The end of a cycle, in the log file: what tests and people wait on.
            log.debug("cycle %d done; waiting for new mail", outcome.cycles)
            deadline = time.monotonic() + interval
            if idle_limit:
                deadline = min(deadline, last_seen + idle_limit)
            poll_due = next_poll(monitor, ledger)
            if poll_due is not None:
                # A receiving system's status is asked for on its own schedule.
                deadline = min(deadline, time.monotonic() + max(poll_due, MIN_POLL_WAIT))
            try:
                while not shutdown.requested:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or source.wait_for_change(min(WAIT_SLICE, remaining)):
                        break
            except ConfigError:
                raise
            except ExportmonError as exc:
                report_unreachable(ledger, exc)
                _reconnect_later(options, monitor, source, shutdown, backoff)
                source = None
    finally:
        if source is not None:
            source.close()


def _cycle_failed(ledger: Ledger, error: ExportmonError, outcome: WatchOutcome) -> None:
    """Log a cycle that failed as a whole: ERROR once per problem, INFO while it lasts."""
    outcome.cycles += 1
    outcome.failed_cycles += 1
    if ledger.notice_once(f"cycle-failed:{error.message}"):
        log.error("%s", error.one_line())
    else:
        log.info("still failing: %s", error.one_line())


def _reconnect_later(
    options: RunOptions,
    monitor: MonitorConfig,
    source: MailSource,
    shutdown: Shutdown,
    backoff: Backoff,
) -> None:
    """Close ``source`` and wait the next back-off (ended early by a signal)."""
    source.close()
    delay = backoff.next()
    _tell(options, monitor, f"reconnecting in {format_duration(delay)}")
    shutdown.sleep(delay)


def _watch_into(
    results: dict[str, WatchOutcome],
    monitor: MonitorConfig,
    options: RunOptions,
    stop: Shutdown,
) -> None:
    results[monitor.name] = watch_monitor(monitor, options, stop)


def watch(
    load: Callable[[], Sequence[MonitorConfig]],
    options: RunOptions,
    shutdown: Shutdown,
) -> list[WatchOutcome]:
    """Watch every monitor ``load`` returns, one thread each, until stopped.

    On SIGHUP (``shutdown.take_reload()``) the watchers finish their current
    file, ``load`` is called again and watching resumes with the new configs.
    Returns when every watcher has ended (stopped, idle, or unable to start).
    """
    outcomes: list[WatchOutcome] = []
    while True:
        monitors = list(load())
        generation = Shutdown()
        results: dict[str, WatchOutcome] = {}

        threads = [
            threading.Thread(
                target=_watch_into,
                args=(results, monitor, options, generation),
                name=f"watch-{monitor.name}",
                daemon=True,
            )
            for monitor in monitors
        ]
        for thread in threads:
            thread.start()
        reload = False
        while any(thread.is_alive() for thread in threads):
            if shutdown.requested:
                break
            if shutdown.take_reload():
                reload = True
                break
            shutdown.sleep(1.0)
        generation.request()
        for thread in threads:
            thread.join()
        outcomes = [results[m.name] for m in monitors if m.name in results]
        if not reload or shutdown.requested:
            return outcomes
        credentials.clear_cache()
        log.info("configuration reloaded")
