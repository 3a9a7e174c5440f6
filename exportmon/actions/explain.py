"""Why a mail is (or is not) taken as an export: the answer to "nothing happens".

:func:`explain_mail` goes through every check a run makes on one mail, in the same
order and with the same code — size, parsing, screening (exportmon's own alerts,
automatic replies, bounces, ``allowed_senders``), each recogniser (headers, subject
pattern, the export id and ``ids``), forwarded mails, the links and attachments
found, and for each link the download rules (scheme, host and ``allow_hosts``,
private addresses, expiry) — and returns a :class:`Verdict`: whether the mail is an
export mail, the one reason that decides, and every step with what it found.
Nothing is recorded and nothing is downloaded.

For a folder source, :func:`explain_folder` does the same for each file: whether
it is complete, matches ``source.patterns``, which ``[[types]]`` rule types it,
and whether it was processed before.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError, UsageError
from exportmon.mail import message as mails
from exportmon.mail.source import MAX_MAIL_BYTES
from exportmon.units import format_size


@dataclass
class Step:
    """One check: its name, whether it passed (None: not applicable), what it found."""

    check: str
    passed: bool | None
    detail: str


@dataclass
class Verdict:
    """What a run would do with one mail."""

    where: str
    export_mail: bool
    #: What a run does: "download", "take the attachment", "leave alone", "fail".
    outcome: str
    reason: str
    subject: str | None = None
    sender: str | None = None
    export_id: int | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_mail(raw: bytes, monitor: MonitorConfig, where: str) -> Verdict:
    """The verdict on ``raw`` for ``monitor`` (see the module docstring)."""
    steps: list[Step] = []
    if len(raw) > MAX_MAIL_BYTES:
        reason = (
            f"the mail is {format_size(len(raw))}, more than the {format_size(MAX_MAIL_BYTES)} "
            "exportmon reads (exports that big should come as a link)"
        )
        return Verdict(where, False, "fail", reason, steps=[Step("size", False, reason)])
    steps.append(Step("size", True, format_size(len(raw))))
    try:
        message = mails.parse(raw)
        info = mails.mail_info(message)
    except Exception as exc:  # hostile mail: the verdict says so
        reason = f"cannot read the mail ({type(exc).__name__})"
        return Verdict(where, False, "fail", reason, steps=[*steps, Step("parse", False, reason)])
    verdict = Verdict(where, False, "leave alone", "", info.subject, info.sender, steps=steps)
    steps.append(Step("parse", True, f"Message-ID {info.message_id or '(none)'}"))
    allowed = monitor.source.allowed_senders
    skip = mails.screen(message, monitor)
    sender_rule = f"allowed_senders {', '.join(allowed)}" if allowed else "any sender allowed"
    if skip is not None:
        steps.append(Step("screen", False, skip))
        verdict.reason = skip
        return verdict
    steps.append(Step("screen", True, f"not an alert, reply or bounce; {sender_rule}"))
    recognition = mails.recognise(message, monitor)
    for name, identity, why_not in mails.identities(message, monitor):
        steps.append(_recognizer_step(name, identity, why_not))
    if recognition.skip == "not an export mail":
        forwarded = mails.forwarded_identities(message, monitor)
        if forwarded and not monitor.source.accept_forwarded:
            verdict.reason = (
                "an export mail forwarded as an attachment, and source.accept_forwarded is off "
                "(set it to true, and widen source.search)"
            )
            steps.append(Step("forwarded", False, verdict.reason))
            return verdict
        verdict.reason = (
            "no recognizer matches: it is not an export mail (look at its headers with "
            "`explain --headers` and add a [[recognizers]] rule for them)"
        )
        return verdict
    verdict.export_id = recognition.export_id
    if recognition.forwarded:
        steps.append(Step("forwarded", True, "the export mail is forwarded inside this one"))
    if recognition.skip is not None:
        verdict.reason = f"{recognition.skip} (add it to ids to take these mails)"
        steps.append(Step("ids", False, verdict.reason))
        return verdict
    if recognition.export_id is None or (recognition.problem and not recognition.exports):
        verdict.outcome = "fail"
        verdict.export_mail = recognition.export_id is not None
        verdict.reason = recognition.problem or "unreadable"
        steps.append(Step("exports", False, verdict.reason))
        return verdict
    steps.append(Step("ids", True, f"export id {recognition.export_id} is in ids"))
    verdict.export_mail = True
    refusals = []
    for found in recognition.exports:
        entry: dict[str, Any] = {"kind": found.kind, "file": found.file_name}
        if found.kind == "attachment":
            size = len(found.attachment.content) if found.attachment else 0
            steps.append(Step("attachment", True, f"{found.file_name} ({format_size(size)})"))
        else:
            assert found.link is not None
            entry["link"] = _shown(found.link)
            problem = link_problem(found.link, monitor)
            entry["refused"] = problem
            steps.append(
                Step(
                    "link",
                    problem is None,
                    f"{_shown(found.link)} -> {found.file_name}: "
                    + (problem or "passes the download rules"),
                )
            )
            if problem:
                refusals.append(problem)
        verdict.files.append(entry)
    if refusals:
        verdict.outcome = "fail"
        verdict.reason = refusals[0]
    else:
        kinds = {f.kind for f in recognition.exports}
        verdict.outcome = "download" if "link" in kinds else "take the attachment"
        names = ", ".join(str(f.file_name) for f in recognition.exports)
        verdict.reason = f"an export mail for export {recognition.export_id}: {names}"
    return verdict


def _recognizer_step(name: str, identity: Any, why_not: str) -> Step:
    if identity is None:
        return Step(f"recognizer {name}", False, why_not)
    if identity.problem:
        return Step(f"recognizer {name}", False, identity.problem)
    token = f", token {identity.token}" if identity.token else ""
    return Step(f"recognizer {name}", True, f"export id {identity.export_id}{token}")


def _shown(link: str) -> str:
    from exportmon.net.http import display_url

    return display_url(link)


def link_problem(link: str, monitor: MonitorConfig) -> str | None:
    """Why a run would refuse to download ``link`` before the first byte, or None."""
    from exportmon.download import check_not_expired
    from exportmon.net.http import check_scheme, resolve_checked

    try:
        _scheme, host, port = check_scheme(link)
        check_not_expired(link)
        resolve_checked(
            host,
            port,
            monitor.download.allow_hosts,
            allow_key="download.allow_hosts",
            action="download from",
        )
    except ExportmonError as exc:
        return exc.one_line()
    return None


def printable(text: str) -> str:
    """Sender text with control and format characters shown as escapes."""
    import unicodedata

    return "".join(
        c if c.isprintable() and unicodedata.category(c) != "Cf" else f"\\x{ord(c):02x}"
        for c in text
    )


def render(verdict: Verdict) -> str:
    """The verdict for a person: a headline, then one line per check."""
    mark = {True: "ok", False: "NO", None: "--"}
    lines = [printable(f"{verdict.where}: {verdict.outcome} — {verdict.reason}")]
    if verdict.subject or verdict.sender:
        lines.append(
            "  mail " + printable(f"{verdict.subject or ''!r} from {verdict.sender or 'unknown'}")
        )
    for step in verdict.steps:
        lines.append(f"  {mark[step.passed]:<3} {step.check:<20} {printable(step.detail)}")
    return "\n".join(lines)


def explain_mailbox(monitor: MonitorConfig, *, recent: int = 20) -> list[Verdict]:
    """Verdicts for the monitor's mailbox: every mail a poll would look at now (a dry
    run: nothing recorded), then the last ``recent`` mails the ledger recorded as left
    alone or failed, with the reason recorded then."""
    from exportmon.ledger import Ledger
    from exportmon.mail.source import open_source

    verdicts: list[Verdict] = []
    monitor.dirs.create()
    with Ledger.open(monitor.dirs.ledger) as ledger:
        with open_source(monitor) as source:
            for polled in source.poll(ledger, dry_run=True):
                where = polled.location.describe()
                info = polled.info
                verdict = Verdict(
                    where,
                    polled.outcome == "export",
                    {"export": "download", "failed": "fail"}.get(polled.outcome, "leave alone"),
                    polled.reason or "",
                    info.subject if info else None,
                    info.sender if info else None,
                )
                for found in polled.found:
                    verdict.export_id = found.export_id
                    problem = link_problem(found.link, monitor) if found.link else None
                    verdict.files.append(
                        {"kind": found.kind, "file": found.file_name, "refused": problem}
                    )
                    if problem:
                        verdict.outcome, verdict.reason = "fail", problem
                if verdict.export_mail and not verdict.reason:
                    names = ", ".join(str(f["file"]) for f in verdict.files)
                    verdict.reason = f"an export mail for export {verdict.export_id}: {names}"
                verdicts.append(verdict)
        earlier = [m for m in ledger.mails("ignored", "failed")][-recent:]
        for mail in earlier:
            verdicts.append(
                Verdict(
                    f"recorded mail #{mail.id} ({mail.first_seen_at})",
                    False,
                    "left alone" if mail.state == "ignored" else "failed",
                    mail.note or "",
                    mail.subject,
                    mail.sender,
                )
            )
    return verdicts


# --- a drop folder (kind = "folder") ---------------------------------------------------


def explain_folder(monitor: MonitorConfig, paths: list[Path] | None = None) -> list[Verdict]:
    """Verdicts for the files of a folder source: every entry of its folder, or the
    files ``paths`` (which may lie elsewhere: judged as if dropped there). Whether a
    file is complete (settling, waiting for its trigger), matches a pattern, which
    ``[[types]]`` rule gives its type, whether it waits for a file of an earlier type
    and whether it was processed before. Nothing is recorded, moved or copied."""
    from exportmon.ledger import Ledger
    from exportmon.mail.dropfolder import FolderSource

    monitor.dirs.create()
    source = FolderSource(monitor)
    verdicts: list[Verdict] = []
    with Ledger.open(monitor.dirs.ledger) as ledger:
        if not paths:
            return [_file_verdict(source, state) for state in source.survey(ledger)]
        folder = source.path.resolve()
        in_folder: dict[str, Any] | None = None
        for path in paths:
            if not os.path.lexists(path):
                raise UsageError(f"cannot read {path}: no such file")
            where = Path(path).absolute()
            if where.parent.resolve() == folder:
                if in_folder is None:  # all of them: a file may wait for another
                    in_folder = {state.name: state for state in source.survey(ledger)}
                state = in_folder[where.name]
                verdicts.append(_file_verdict(source, state, str(path)))
                continue
            elsewhere = dataclasses.replace(
                monitor, source=dataclasses.replace(monitor.source, path=str(where.parent))
            )
            (state,) = FolderSource(elsewhere).survey(None, names=[where.name])
            verdict = _file_verdict(source, state, str(path))
            verdict.steps.insert(
                0, Step("folder", False, f"not in {source.path}: a run does not see it there")
            )
            verdicts.append(verdict)
    return verdicts


def _file_verdict(source: Any, state: Any, where: str | None = None) -> Verdict:
    """The verdict on one :class:`~exportmon.mail.dropfolder.FileState`."""
    where = where or str(source.path / state.name)
    steps: list[Step] = []
    verdict = Verdict(where, False, "leave alone", state.waiting or "", steps=steps)
    if state.snapshot is None:  # not a regular file, or a name never taken
        steps.append(Step("file" if state.entry != "ignored" else "name", False, state.waiting))
        return verdict
    steps.append(Step("file", True, f"a regular file, {format_size(state.snapshot.size)}"))
    if state.entry != "export":
        steps.append(Step("pattern", False, state.waiting))
        return verdict
    steps.append(Step("pattern", True, f"matches {state.pattern}"))
    settle = source.monitor.source.settle or 0
    how = (
        f"trigger {source.monitor.source.trigger}"
        if source.monitor.source.trigger
        else (f"unchanged for settle = {settle:g} s")
    )
    steps.append(Step("complete", state.complete, state.waiting or how))
    if state.rule is None and state.no_rule is None:
        steps.append(Step("type", None, "told once the file is complete"))
    else:
        steps.append(Step("type", state.no_rule is None, state.rule or state.no_rule))
    verdict.files.append({"kind": "file", "file": state.name, "type": state.type})
    verdict.export_id = source.export_id
    if state.processed is not None:
        steps.append(Step("processed", False, f"taken before as {state.processed}"))
    else:
        steps.append(Step("processed", True, "not taken before"))
    if state.held_by is not None:
        steps.append(Step("order", False, state.held_by))
    if state.processed is not None:
        verdict.outcome = "done"
        verdict.reason = f"already processed ({state.processed}): not taken again"
    elif not state.complete:
        verdict.outcome, verdict.reason = "wait", f"not complete: {state.waiting}"
    elif state.no_rule is not None:
        verdict.reason = f"{state.no_rule}; it stays in the folder"
    elif state.held_by is not None:
        verdict.outcome, verdict.reason = "wait", state.held_by
    else:
        verdict.export_mail = True
        verdict.outcome = "take the file"
        kind = f" as type {state.type}" if state.type else ""
        verdict.reason = f"complete: taken{kind} for export {source.export_id}"
    return verdict


def render_file(verdict: Verdict, width: int = 80) -> str:
    """A file's verdict for a person: its path, the outcome and reason, one line per
    check, wrapped to ``width`` columns."""
    import textwrap

    mark = {True: "ok", False: "NO", None: "--"}
    lines = [printable(verdict.where)]
    lines += textwrap.wrap(
        printable(f"{verdict.outcome}: {verdict.reason}"),
        width,
        initial_indent="  ",
        subsequent_indent="  ",
    )
    for step in verdict.steps:
        lines += textwrap.wrap(
            printable(step.detail),
            width,
            initial_indent=f"  {mark[step.passed]:<3} {step.check:<10} ",
            subsequent_indent=" " * 17,
        )
    return "\n".join(lines)
