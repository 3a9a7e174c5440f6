"""When an export is expected: ``expect_every`` as a duration or a 5-field cron expression.

The rule is the one cron-job monitors such as Healthchecks use: after an export
arrives, the next one is expected one interval later (``"1d"``), or at the first
time the cron expression matches after the arrival (``"0 6 * * 1"``: Monday
06:00). An export is *late* once that moment has passed, and *missing* once the
grace period has passed as well.

Cron expressions are evaluated by :mod:`cronsim` (Debian cron's semantics,
including its handling of daylight saving time) in the machine's local time
zone, as cron itself does; set ``TZ`` to evaluate them in another zone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from exportmon.units import format_duration, parse_duration

#: Cron fields: numbers, names, ``*``, ranges, steps, lists, and Debian's ``L`` / ``#``.
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-#]+")


@dataclass(frozen=True)
class Schedule:
    """A parsed ``expect_every``: exactly one of ``interval`` (seconds) and ``cron`` is set."""

    text: str
    interval: float | None = None
    cron: str | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first expected arrival strictly after ``moment`` (aware, returned in UTC).

        None when a cron expression never matches again (e.g. 30 February).
        """
        if self.interval is not None:
            return moment.astimezone(timezone.utc) + timedelta(seconds=self.interval)
        assert self.cron is not None
        try:
            found = next(CronSim(self.cron, moment.astimezone(local_zone())))
        except StopIteration:
            return None
        return found.astimezone(timezone.utc)

    def describe(self) -> str:
        """``"every 1d"`` or ``"cron 0 6 * * 1"``."""
        if self.interval is not None:
            return f"every {format_duration(self.interval)}"
        return f"cron {self.cron}"


def parse_schedule(text: str) -> Schedule:
    """Parse ``expect_every``: a duration (``"1d"``, ``"12h"``) or a 5-field cron expression.

    Raises :class:`ValueError` with a message fit for the user.
    """
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        if seconds <= 0:
            raise ValueError(f"{text!r}: an export cannot be expected every 0 seconds")
        return Schedule(text=text, interval=seconds)
    fields = text.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(
            f'{text!r} is neither a duration ("1d", "1w") nor a 5-field cron expression'
            ' ("minute hour day month weekday", e.g. "0 6 * * 1")'
        )
    cron = " ".join(fields)
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None
    return Schedule(text=text, cron=cron)


@lru_cache(maxsize=1)
def _zone_for(tz_variable: str | None) -> tzinfo:
    if tz_variable:
        try:
            return ZoneInfo(tz_variable.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        pass
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else timezone.utc


def local_zone() -> tzinfo:
    """The machine's time zone (``TZ`` if set), with its daylight-saving rules when known."""
    return _zone_for(os.environ.get("TZ"))


@dataclass(frozen=True)
class Lateness:
    """How an export id stands against its schedule at one moment."""

    #: When the next export is (or was) expected; None when it cannot be known.
    expected_at: datetime | None
    #: ``on_time``, ``late`` (past expected_at, within grace) or ``missing`` (past grace).
    verdict: str
    #: Seconds past ``expected_at`` (0 when on time).
    late_by: float


def lateness(
    schedule: Schedule, anchor: datetime | None, grace: float | None, now: datetime
) -> Lateness:
    """Compare ``now`` with the arrival expected after ``anchor``.

    ``anchor`` is the last arrival, or when watching began if nothing has arrived
    yet; without an anchor nothing can be said (``unknown``).
    """
    if anchor is None:
        return Lateness(None, "unknown", 0.0)
    expected = schedule.next_after(anchor)
    if expected is None:
        return Lateness(None, "on_time", 0.0)
    late_by = (now - expected).total_seconds()
    if late_by <= 0:
        return Lateness(expected, "on_time", 0.0)
    verdict = "missing" if late_by > (grace or 0.0) else "late"
    return Lateness(expected, verdict, late_by)
