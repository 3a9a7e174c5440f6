"""Sending a report by mail: its text and HTML renderings through a monitor's SMTP settings."""

from __future__ import annotations

from collections.abc import Sequence

from exportmon.actions.report import Report
from exportmon.config.schema import MonitorConfig
from exportmon.errors import UsageError
from exportmon.notify import smtp as channels
from exportmon.render.html import render_html
from exportmon.render.text import render_text


def mail_report(monitors: Sequence[MonitorConfig], report: Report, to: Sequence[str]) -> str:
    """Send the report (text + HTML) through the first monitor with alert SMTP settings.

    Returns the name of the monitor whose settings were used. Raises
    :class:`UsageError` when none has any, or the SMTP errors of
    :func:`exportmon.notify.smtp.send_mail`.
    """
    sender = next((m for m in monitors if m.alerts.smtp_url), None)
    if sender is None:
        raise UsageError(
            "no SMTP server to send the report through",
            hint="set smtp_url (and to, smtp_user) in the [alerts] table of a monitor",
        )
    message = channels.new_message(
        sender.alerts,
        monitor=sender.name,
        subject=f"[exportmon] report {report.period}: {report.summary.line()}",
        text=render_text(report),
        html=render_html(report),
        to=list(to),
    )
    channels.send_mail(sender.alerts, message, monitor=sender)
    return sender.name
