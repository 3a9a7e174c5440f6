"""Why a mail is (or is not) taken as an export: the answer to "nothing happens".

:func:`explain_mail` goes through every check a run makes on one mail, in the same
order and with the same code — size, parsing, screening (exportmon's own alerts,
automatic replies, bounces, ``allowed_senders``), each recogniser (headers, subject
pattern, the export id and ``ids``), forwarded mails, the links and attachments
found, and for each link the download rules (scheme, host and ``allow_hosts``,
private addresses, expiry) — and returns a :class:`Verdict`: whether the mail is an
export mail, the one reason that decides, and every step with what it found.
Nothing is recorded and nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
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
