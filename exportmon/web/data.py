"""What the status page and its endpoints show, computed afresh from configs and ledgers.

Configs are loaded again for every snapshot, so an edited or broken config is
seen at once; a config that does not load is a monitor in ``error`` named by
its file. The JSON is the same as ``exportmon status --json`` and
``exportmon report --json``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from exportmon.actions.report import Report, build_report
from exportmon.actions.status import (
    MonitorStatus,
    broken_config_status,
    mask_configured_secrets,
    overall,
    status_of,
    summarise,
)
from exportmon.config.load import load_monitors
from exportmon.config.schema import MonitorConfig
from exportmon.errors import LedgerError
from exportmon.ledger import Ledger, to_text
from exportmon.redact import redact
from exportmon.render.prometheus import prometheus_text

#: Snapshots younger than this are reused (many clients refreshing at once).
CACHE_SECONDS = 1.0


@dataclass
class Snapshot:
    """Everything the page shows, at one moment."""

    taken_at: datetime
    statuses: list[MonitorStatus]
    broken: list[MonitorStatus]
    report: Report

    @property
    def all_statuses(self) -> list[MonitorStatus]:
        return self.statuses + self.broken

    @property
    def state(self) -> str:
        return overall(self.all_statuses)[0]

    @property
    def healthy(self) -> bool:
        """Every monitor is ok (and there is at least one)."""
        return bool(self.all_statuses) and all(s.state == "ok" for s in self.all_statuses)

    def status_json(self) -> dict[str, Any]:
        state, reason = overall(self.all_statuses)
        return {
            "state": state,
            "reason": reason,
            "checked_at": to_text(self.taken_at),
            "monitors": [status.to_dict() for status in self.all_statuses],
        }

    def metrics(self) -> str:
        return prometheus_text(summarise(self.all_statuses, now=self.taken_at))


def monitor_status(monitor: MonitorConfig, ledger: Ledger | None, now: datetime) -> MonitorStatus:
    return status_of(monitor, ledger, now=now)


class Source:
    """Takes snapshots of the monitors in ``configs`` (all configured ones if empty)."""

    def __init__(
        self,
        configs: Sequence[Path] = (),
        *,
        strict: bool = False,
        since: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.configs = list(configs)
        self.strict = strict
        self.since = since
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            snap = self.take()
            self._cached = (time.monotonic(), snap)
            return snap

    def take(self, since: timedelta | None = None) -> Snapshot:
        now = self.clock()
        monitors, errors = load_monitors(self.configs or None, strict=self.strict)
        statuses, sources, opened = [], [], []
        try:
            for monitor in monitors:
                mask_configured_secrets(monitor)
                ledger = None
                try:
                    if monitor.dirs.ledger.exists():
                        ledger = Ledger.open(monitor.dirs.ledger)
                        opened.append(ledger)
                    statuses.append(status_of(monitor, ledger, now=now))
                except LedgerError as exc:
                    broken = status_of(monitor, None, now=now)
                    broken.state, broken.reason = "error", redact(exc.one_line())
                    statuses.append(broken)
                    ledger = None
                sources.append((monitor, ledger))
            report = build_report(sources, now - (since or self.since), now, now=now)
        finally:
            for ledger in opened:
                ledger.close()
        broken_configs = [broken_config_status(error, now=now) for error in errors]
        return Snapshot(now, statuses, broken_configs, report)
