"""Runs of exportmon, failures of whole steps, and notices logged once.

A run is one command's work on a monitor (``run``, ``fetch``, ...) from start to
finish. A step failure is a step of a whole run (reading the mailbox, say) that is
failing, counted until it works again. A notice is something logged only the first
time it happens (a mail in a folder nobody watches, say).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from exportmon.ledger.db import Database, now


@dataclass
class Run:
    id: int
    command: str
    pid: int
    started_at: str
    finished_at: str | None
    status: str
    summary: str | None


@dataclass
class StepFailure:
    """A step of a whole run (reading the mailbox, say) that is failing."""

    step: str
    error: str
    first_at: str
    last_at: str
    count: int


class RunRecords(Database):
    """The ledger's runs, step failures and notices."""

    def start_run(self, command: str) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, pid, started_at) VALUES (?, ?, ?)",
                (command, os.getpid(), now()),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (now(), status, json.dumps(summary) if summary else None, run_id),
            )

    def runs(self, limit: int = 20) -> list[Run]:
        return self._all(Run, "SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))

    # --- failures of whole steps ------------------------------------------------------

    def record_step_failure(self, step: str, error: str, at: str | None = None) -> StepFailure:
        """Record that ``step`` (e.g. ``fetch``) failed as a whole; repeats are counted."""
        stamp = at or now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO step_failures (step, error, first_at, last_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (step) DO UPDATE SET error = excluded.error,"
                " last_at = excluded.last_at, count = count + 1",
                (step, error, stamp, stamp),
            )
        failure = self._one(StepFailure, "SELECT * FROM step_failures WHERE step = ?", (step,))
        assert failure is not None
        return failure

    def clear_step_failure(self, step: str) -> bool:
        """Forget the failure of ``step`` (it worked again); True if there was one."""
        with self._transaction() as db:
            return db.execute("DELETE FROM step_failures WHERE step = ?", (step,)).rowcount > 0

    def step_failures(self) -> list[StepFailure]:
        return self._all(StepFailure, "SELECT * FROM step_failures ORDER BY first_at")

    # --- notices: things logged once -------------------------------------------------

    def notice_once(self, key: str) -> bool:
        """Count an occurrence of ``key``; True only the first time it is seen."""
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO notices (key, first_at, last_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                (key, stamp, stamp),
            )
            count = db.execute("SELECT count FROM notices WHERE key = ?", (key,)).fetchone()[0]
            return bool(count == 1)

    def notice_count(self, key: str) -> int:
        """How often ``key`` has been noticed (0 for never)."""
        return int(self._value("SELECT count FROM notices WHERE key = ?", (key,)) or 0)

    # --- named reads for status --------------------------------------------------------

    def watch_started(self) -> str | None:
        """When this monitor began watching: its first run, or else the first mail it saw."""
        return self._text(
            "SELECT min(t) FROM (SELECT min(started_at) AS t FROM runs"
            " UNION ALL SELECT min(first_seen_at) FROM mails)"
        )
