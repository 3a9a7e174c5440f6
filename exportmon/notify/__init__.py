"""Telling people: notices, and the channels that carry them.

A :class:`Notice` is what one alert says (a failure, a recovery, a missing
export, a delivered export, a run's summary), rendered once by
:mod:`exportmon.notify.message` in the shapes the channels need: a title, the one
line that matters, a plain-text and an HTML body, and flat details.

A :class:`Channel` carries notices to one place. Each kind lives in its own
module with a ``channels(monitor)`` function returning the channels a monitor
configures; :data:`CHANNEL_KINDS` names those modules, and
:func:`configured_channels` asks each of them in turn:

* :mod:`exportmon.notify.smtp` – mail through ``[alerts] smtp_url`` (``mail``);
* :mod:`exportmon.notify.command` – a shell command with the notice as JSON (``command``);
* :mod:`exportmon.notify.apprise` – every Apprise URL in ``[alerts] notify``
  (Slack, Teams, ntfy, Matrix, ``json://`` webhooks, ...).

Channels are independent: the alert engine (:mod:`exportmon.actions.alerts`)
sends, records and retries every channel on its own, so one that is down never
holds back another. Heartbeats to an outside monitoring service are not
notices; they live in :mod:`exportmon.notify.heartbeat`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from exportmon.errors import ExportmonError

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig

#: What an alert is about. ``rows`` (a row count out of range) counts as a failure for ``on``.
NoticeKind = Literal["failure", "missing", "rows", "recovery", "success", "summary"]
#: How urgent it looks in a chat (Apprise's notification types).
Level = Literal["failure", "warning", "success", "info"]

#: The kinds ``[alerts] on`` may list, and what is sent without it.
ON_KINDS = ("failure", "recovery", "missing", "success", "summary")
DEFAULT_ON = ("failure", "recovery", "missing")

#: Channel kinds, in the order they are tried, and the module implementing each.
CHANNEL_KINDS: dict[str, str] = {
    "mail": "exportmon.notify.smtp",
    "command": "exportmon.notify.command",
    "notify": "exportmon.notify.apprise",
}


@dataclass(frozen=True)
class Notice:
    """One alert as every channel needs it; all text already redacted."""

    kind: str
    monitor: str
    #: One line: the mail subject, the chat message's title.
    title: str
    #: The one line that matters: a chat message's body.
    line: str
    #: The full plain-text body of a mail.
    text: str
    #: The same as HTML (every value escaped).
    html: str
    level: Level = "info"
    #: Flat details for machines: the command's JSON and ``EXPORTMON_*`` variables.
    details: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """Something that carries a notice to people."""

    @property
    def name(self) -> str:
        """Stable identity recorded in the ledger (``mail``, ``command``,
        ``notify:json:1a2b3c4d``); never holds a secret."""

    @property
    def label(self) -> str:
        """How logs and errors name it; never holds a secret."""

    def send(self, notice: Notice) -> None:
        """Deliver ``notice``, or raise an :class:`~exportmon.errors.ExportmonError`
        (``retryable`` when trying again later can work)."""


@dataclass(frozen=True)
class BrokenChannel:
    """A channel kind that cannot be set up now (the variable holding its URLs is
    unset, say): every send fails with the reason, so its alerts wait until it is fixed."""

    name: str
    label: str
    error: ExportmonError

    def send(self, notice: Notice) -> None:
        raise self.error


def configured_channels(monitor: MonitorConfig) -> list[Channel]:
    """Every channel ``monitor`` configures, in :data:`CHANNEL_KINDS` order.

    A kind that cannot be set up (an Apprise URL without the ``notify`` extra,
    a ``notify_command`` that fails) becomes a :class:`BrokenChannel` carrying
    the reason, so the other kinds still work.
    """
    found: list[Channel] = []
    for kind, module_name in CHANNEL_KINDS.items():
        try:
            found.extend(importlib.import_module(module_name).channels(monitor))
        except ExportmonError as error:
            found.append(BrokenChannel(kind, f"the {kind} channel", error))
    return found


def wanted(monitor: MonitorConfig, kind: str) -> bool:
    """Whether ``[alerts] on`` asks for notices of ``kind``."""
    category = "failure" if kind == "rows" else kind
    return category in monitor.alerts.on
