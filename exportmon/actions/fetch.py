"""Fetching: archive what is done, take new export mails, download each export.

:func:`fetch` is one round of it, as ``exportmon fetch`` and ``exportmon run`` do:

1. :func:`archive_mails`: mails whose exports are all delivered (ledger mail state
   ``delivered``) are moved to the archive folder (``archived``), or marked
   ``kept`` where nothing is to be moved. A mail is never archived earlier.
2. ``source.poll``: new mails are screened, recognised and recorded with their
   exports (see :mod:`exportmon.mail.source`).
   A mailbox that cannot be reached (for reading or archiving) is recorded as the
   failing step ``fetch`` (``Ledger.record_step_failure``, for status and alerts)
   until a poll works again, and reported once (:func:`report_unreachable`);
   mails that cannot be archived likewise as step ``archive``.
3. :func:`download_export` for every export still ``new`` that is due: just
   recorded, due for a retry (``retry_after`` passed), or any failed one with
   ``retry_failed``. Each failure is recorded once in the ledger
   (:func:`exportmon.actions.steps.attempt`) and the other exports go on.

Downloads land in ``downloads/<export id>/<row id>-<token or date>/<file>``
(:func:`exportmon.paths.export_dir`): the folder belongs to one ledger row, so an
export never overwrites the file of another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from exportmon.actions.monitor_run import recorded_run
from exportmon.actions.plan import export_plan
from exportmon.actions.steps import attempt, changed_config_exports, retry_changed_config
from exportmon.atomic import sha256_file
from exportmon.crashpoints import crash_point
from exportmon.download import DownloadSettings, check_not_expired, download
from exportmon.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    DownloadError,
    ExportmonError,
    LinkExpired,
    MailError,
)
from exportmon.ledger import Export, Ledger, Mail
from exportmon.log import get_logger
from exportmon.mail.source import MailSource, PolledMail, open_source
from exportmon.paths import download_hint, export_dir
from exportmon.progress import ProgressFactory
from exportmon.units import format_size

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig

log = get_logger(__name__)

#: The step name failures of :func:`download_export` are recorded under.
DOWNLOAD_STEP = "download"
#: Whole steps whose failure (the mailbox cannot be read, mails cannot be archived)
#: is kept in the ledger's ``step_failures`` until the step works again.
FETCH_STEP = "fetch"
ARCHIVE_STEP = "archive"


@dataclass
class Failure:
    """Something that went wrong in a fetch, in one line.

    ``stage`` is ``source`` (the mailbox could not be read), ``mail`` (a mail could
    not be used), ``export`` (a download failed) or ``archive``.
    """

    stage: str
    message: str
    export: Export | None = None
    mail: Mail | None = None


@dataclass
class FetchResult:
    """What one :func:`fetch` did."""

    monitor: str
    #: Exports downloaded in this fetch (state ``downloaded``), in order.
    downloaded: list[Export] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: Mails archived or marked kept in this fetch (in a dry run: those that would be).
    archived: list[Mail] = field(default_factory=list)
    #: Every new mail the source looked at, with its outcome.
    mails: list[PolledMail] = field(default_factory=list)
    #: Dry run: one line per thing that would be done.
    planned: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def counts(self) -> dict[str, int]:
        outcomes = [m.outcome for m in self.mails]
        return {
            "mails": len(self.mails),
            "export_mails": outcomes.count("export"),
            "ignored": outcomes.count("ignored"),
            "duplicates": outcomes.count("duplicate"),
            "downloaded": len(self.downloaded),
            "bytes": sum(e.bytes or 0 for e in self.downloaded),
            "failed": len(self.failures),
            "archived": len(self.archived),
        }


def download_dir(monitor: MonitorConfig, ledger: Ledger, export: Export) -> Path:
    """The folder ``export`` is downloaded into (see :func:`exportmon.paths.export_dir`)."""
    mail = ledger.mail(export.mail_id) if export.mail_id is not None else None
    hint = download_hint(export.token, mail.sent_at if mail else None)
    return export_dir(monitor.dirs.downloads, export.id, export.export_id, hint)


def download_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    *,
    progress: ProgressFactory | None = None,
) -> Export:
    """Take ``export`` from ``new`` to ``downloaded`` and return the updated record.

    A link is downloaded (:func:`exportmon.download.download`); an attachment was
    saved when its mail was taken and is only checked here. An export past ``new``
    is returned unchanged. Raises :class:`~exportmon.errors.ExportmonError`; wrap
    the call in :func:`~exportmon.actions.steps.attempt` to record failures.
    """
    if export.state != "new":
        return export
    if export.kind == "attachment":
        path = Path(export.download_path or "")
        if not export.download_path or not path.is_file():
            raise MailError(
                f"the attached file {export.file_name} is missing from {path.parent}",
                hint="move the mail back to the mailbox's unread state or pass it to "
                "`exportmon fetch --eml` again",
                retryable=False,
            )
        size = path.stat().st_size
        log.info("export %s: attached file %s (%s)", export.export_id, path.name, format_size(size))
        return ledger.advance_export(
            export.id, "downloaded", download_path=str(path), bytes=size, sha256=sha256_file(path)
        )
    if not export.link:
        raise MailError(
            "the export mail has neither a download link nor an attached .csv/.zip file",
            hint="for another system's mails, configure a [[recognizers]] link_pattern",
            retryable=False,
        )
    result = download(
        export.link,
        download_dir(monitor, ledger, export),
        file_name=export.file_name,
        settings=DownloadSettings.from_config(monitor.download),
        progress=progress,
        description=f"{export.export_id}: {export.file_name or 'export'}",
    )
    crash_point("download.saved")
    log.info(
        "export %s: downloaded %s (%s)%s",
        export.export_id,
        result.path.name,
        format_size(result.bytes),
        " after resuming" if result.resumed else "",
    )
    return ledger.advance_export(
        export.id,
        "downloaded",
        download_path=str(result.path),
        bytes=result.bytes,
        sha256=result.sha256,
        file_name=result.path.name,
    )


def redownload_if_gone(monitor: MonitorConfig, ledger: Ledger, export: Export) -> Export:
    """``export`` ready for its next step, or sent back to download what is gone.

    An export past ``new`` whose downloaded or unpacked files were removed (by hand,
    by a cleanup job) cannot go on. It is unpacked again when the download is still
    there, downloaded again when its link may still work, and otherwise fails for
    good (not retried by itself) with one line saying what to do.
    """
    if export.state not in ("downloaded", "unpacked"):
        return export
    download = Path(export.download_path) if export.download_path else None
    if export.state == "unpacked":
        gone = [Path(f.path) for f in ledger.files(export.id) if not Path(f.path).exists()]
        if not gone:
            return export
        if download is not None and download.is_file():
            log.warning(
                "export %s: unpacked file %s is gone; unpacking %s again",
                export.export_id,
                gone[0].name,
                download.name,
            )
            ledger.reset_export(export.id, "downloaded")
            return ledger.export(export.id) or export
    elif download is not None and download.is_file():
        return export
    missing = download or Path(export.file_name or "download")
    if export.kind == "link" and export.link:
        try:
            check_not_expired(export.link)
        except LinkExpired:
            raise DownloadError(
                f"the downloaded file {missing} is gone and the link has expired",
                hint=f"ask the sender to re-run export {export.export_id}",
                retryable=False,
            ) from None
        log.warning(
            "export %s: the downloaded file %s is gone; downloading it again",
            export.export_id,
            missing,
        )
        ledger.reset_export(export.id, "new")
        return ledger.export(export.id) or export
    if monitor.source.kind == "folder":
        raise MailError(
            f"the copy of the dropped file {missing.name} is gone",
            hint=f"drop the file into {monitor.source.path} again (a file with a new "
            "modification time is a new export)",
            retryable=False,
        )
    raise MailError(
        f"the saved attachment {missing} is gone",
        hint="move the mail back to the mailbox's unread state or pass it to "
        "`exportmon fetch --eml` again",
        retryable=False,
    )


def report_unreachable(ledger: Ledger, error: ExportmonError, *, record: bool = True) -> int:
    """Record that the mailbox cannot be reached (the failing step ``fetch``) and log it
    once per outage: ERROR the first time, INFO "still failing" while it lasts.

    Reading, archiving and waiting for mail all meet the same outage; whichever meets
    it first reports it. ``record=False`` (a dry run) logs without recording. Returns
    how many times in a row it failed.
    """
    repeats = ledger.record_step_failure(FETCH_STEP, error.one_line()).count if record else 1
    if repeats == 1:
        log.error("%s", error.one_line())
    else:
        log.info("still failing (%d attempts): %s", repeats, error.one_line())
    return repeats


def archive_mails(
    monitor: MonitorConfig,
    ledger: Ledger,
    source: MailSource,
    *,
    dry_run: bool = False,
    failures: list[Failure] | None = None,
) -> list[Mail]:
    """Archive every delivered mail of ``source``; return the mails archived or kept.

    A mail moves to ``archived`` when the source moved (or, POP3 with
    ``delete_after``, deleted) it, and to ``kept`` when there is nothing to move
    (no archive folder, an mbox, ``--eml`` files) or it is no longer there. A mail
    that cannot be moved stays ``delivered`` (and where it is) and is tried again
    next time; its error is logged once and appended to ``failures``. Connection
    errors stop the archiving and propagate.
    """
    done: list[Mail] = []
    for mail in ledger.mails("delivered"):
        if not source.owns(mail):
            continue
        if dry_run:
            verb = "move" if source.moves_mail else "mark as done"
            log.info("would %s mail %r", verb, mail.subject)
            done.append(mail)
            continue
        try:
            outcome = source.archive(mail)
            crash_point("archive.moved")
        except ExportmonError as exc:
            if isinstance(exc, (ConnectionFailed, AuthError)):
                raise
            if ledger.notice_once(f"archive-failed:{mail.id}:{exc.message}"):
                log.error("cannot archive mail %r: %s", mail.subject, exc.one_line())
            if failures is not None:
                failures.append(Failure("archive", exc.one_line(), mail=mail))
            continue
        if outcome == "archived":
            ledger.set_mail_state(mail.id, "archived")
        elif outcome == "gone":
            ledger.set_mail_state(mail.id, "kept", note="no longer in the mailbox; nothing moved")
        else:
            ledger.set_mail_state(mail.id, "kept")
        updated = ledger.mail(mail.id)
        done.append(updated or mail)
    return done


def fetch(
    monitor: MonitorConfig,
    ledger: Ledger,
    *,
    source: MailSource | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    archive: bool = True,
    progress: ProgressFactory | None = None,
    on_downloaded: Callable[[Export], None] | None = None,
    stop: Callable[[], bool] | None = None,
    whole_plan: bool = False,
) -> FetchResult:
    """One fetch round for ``monitor``: archive, poll, download (see the module docs).

    ``source`` defaults to :func:`open_source` (opened and closed here; pass one
    to keep a connection across rounds, as ``run`` does). ``dry_run`` records,
    downloads and moves nothing and lists what would happen in ``planned``.
    ``on_downloaded`` is called with each export as soon as it is downloaded;
    ``stop`` is asked before each download whether to leave the rest for later;
    ``whole_plan`` makes a dry run list every step after the download too (``run``).
    Failures are in ``FetchResult.failures``; only a :class:`ConfigError` (such as a
    password command that fails) is raised, since nothing can be done without it.
    Called on its own (as a library), the round is recorded as a ``fetch`` run.
    """
    with recorded_run(monitor, ledger, "fetch", dry_run=dry_run) as run:
        result = _fetch(
            monitor,
            ledger,
            source,
            dry_run,
            retry_failed,
            archive,
            progress,
            on_downloaded,
            stop,
            whole_plan,
        )
        if run.command == "fetch":
            run.record(result)
        return result


def _fetch(
    monitor: MonitorConfig,
    ledger: Ledger,
    source: MailSource | None,
    dry_run: bool,
    retry_failed: bool,
    archive: bool,
    progress: ProgressFactory | None,
    on_downloaded: Callable[[Export], None] | None,
    stop: Callable[[], bool] | None,
    whole_plan: bool,
) -> FetchResult:
    result = FetchResult(monitor.name)
    own_source = source is None
    mail_source = source if source is not None else open_source(monitor)
    try:
        if archive:
            _archive_step(monitor, ledger, mail_source, result, dry_run)
        try:
            result.mails = mail_source.poll(ledger, dry_run=dry_run)
        except ConfigError as exc:
            if not dry_run:
                ledger.record_step_failure(FETCH_STEP, exc.one_line())
            raise
        except ExportmonError as exc:
            if dry_run:  # part of the plan: what the real run would meet
                result.planned.append(f"would stop: {exc.one_line()}")
            else:
                report_unreachable(ledger, exc)
            result.failures.append(Failure("source", exc.one_line()))
        else:
            if not dry_run and ledger.clear_step_failure(FETCH_STEP):
                log.info("reading %s works again", mail_source.key)
        for polled in result.mails:
            if polled.outcome == "failed":
                reason = f"mail {polled.label()}: {polled.reason}"
                result.failures.append(Failure("mail", reason, mail=polled.mail))
        if dry_run:
            _plan(monitor, ledger, result, retry_failed, whole_plan)
            return result
        if not retry_failed:
            retry_changed_config(monitor, ledger, ("new",))
        for export in ledger.due_exports(include_failed=retry_failed):
            if export.state != "new":
                continue
            if stop is not None and stop():
                break
            done = attempt(
                monitor,
                ledger,
                export,
                DOWNLOAD_STEP,
                partial(download_export, monitor, ledger, export, progress=progress),
            )
            if done is None:
                failed = ledger.export(export.id) or export
                result.failures.append(Failure("export", failed.error or "failed", export=failed))
                continue
            result.downloaded.append(done)
            if on_downloaded is not None:
                on_downloaded(done)
    finally:
        if own_source:
            mail_source.close()
    return result


def _archive_step(
    monitor: MonitorConfig,
    ledger: Ledger,
    source: MailSource,
    result: FetchResult,
    dry_run: bool,
) -> None:
    failures: list[Failure] = []
    try:
        result.archived = archive_mails(monitor, ledger, source, dry_run=dry_run, failures=failures)
    except ConfigError:
        raise
    except ExportmonError as exc:
        # The mailbox cannot be reached at all: the same outage the poll meets (a dry
        # run says so in its plan, after the poll).
        if not dry_run:
            report_unreachable(ledger, exc)
        result.failures.append(Failure("source", exc.one_line()))
        return
    result.failures.extend(failures)
    if not dry_run:
        if failures:
            ledger.record_step_failure(ARCHIVE_STEP, failures[0].message)
        else:
            ledger.clear_step_failure(ARCHIVE_STEP)
    if dry_run:
        verb = "move" if source.moves_mail else "mark as done"
        result.planned.extend(f"would {verb} mail {m.subject!r}" for m in result.archived)


def _plan(
    monitor: MonitorConfig, ledger: Ledger, result: FetchResult, retry_failed: bool, whole: bool
) -> None:
    for polled in result.mails:
        if polled.outcome == "export":
            for found in polled.found:
                result.planned.extend(export_plan(monitor, found, whole=whole))
        elif polled.outcome in ("ignored", "duplicate"):
            result.planned.append(f"would leave mail {polled.label()} alone: {polled.reason}")
    for export in ledger.due_exports(include_failed=retry_failed):
        if export.state == "new":
            what = export.file_name or "an export"
            again = " again" if export.error else ""
            result.planned.append(
                f"would download{again} {what} for export {export.export_id} (recorded earlier)"
            )
    if not retry_failed:
        for export in changed_config_exports(monitor, ledger, ("new",)):
            what = export.file_name or "an export"
            result.planned.append(
                f"would download {what} again for export {export.export_id}"
                " (the config changed since it failed)"
            )
