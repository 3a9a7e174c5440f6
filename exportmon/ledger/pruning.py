"""Pruning: forgetting finished records older than a cut-off.

Only what is finished goes: delivered exports with their files and deliveries,
mails whose exports are gone, finished runs and resolved alerts. Unresolved
problem alerts stay, because they keep a failure from being alerted again as new.
"""

from __future__ import annotations

from dataclasses import dataclass

from exportmon.ledger.db import Database


@dataclass
class StoredPath:
    """A path the ledger knows: an export's download or one of its files."""

    path: str
    #: Its export was delivered before the cut-off asked about.
    prunable: bool


class Pruning(Database):
    """Deleting old records, and what pruning files needs to know."""

    def prune(self, before: str, *, dry_run: bool = False) -> dict[str, int]:
        """Delete finished records created before ``before``; return counts per table.

        ``dry_run`` counts what would be deleted and changes nothing.
        """
        counts = {}
        with self._transaction(commit=not dry_run) as db:
            old = "SELECT id FROM exports WHERE state = 'delivered' AND created_at < ?"
            counts["deliveries"] = db.execute(
                f"DELETE FROM deliveries WHERE export_row IN ({old}) OR"
                " (export_row IS NULL AND started_at < ?)",
                (before, before),
            ).rowcount
            counts["files"] = db.execute(
                f"DELETE FROM files WHERE export_row IN ({old})", (before,)
            ).rowcount
            counts["exports"] = db.execute(
                "DELETE FROM exports WHERE state = 'delivered' AND created_at < ?", (before,)
            ).rowcount
            counts["mails"] = db.execute(
                "DELETE FROM mails WHERE first_seen_at < ? AND state IN ('archived', 'kept',"
                " 'ignored') AND id NOT IN (SELECT mail_id FROM exports WHERE mail_id IS NOT NULL)",
                (before,),
            ).rowcount
            counts["runs"] = db.execute(
                "DELETE FROM runs WHERE started_at < ? AND status != 'running'", (before,)
            ).rowcount
            # Unresolved problem alerts stay: they are what keeps a failure from being
            # alerted again as if it were new.
            counts["alerts"] = db.execute(
                "DELETE FROM alerts WHERE created_at < ? AND state != 'pending'"
                " AND (resolved_at IS NOT NULL OR kind = 'recovery')",
                (before,),
            ).rowcount
        return counts

    def stored_paths(self, delivered_before: str) -> list[StoredPath]:
        """Every download and file path of every export, each marked prunable when its
        export was delivered before ``delivered_before``."""
        return self._all(
            StoredPath,
            "SELECT e.download_path AS path,"
            " coalesce(e.state = 'delivered' AND e.delivered_at < ?, 0) AS prunable"
            " FROM exports e WHERE e.download_path IS NOT NULL"
            " UNION ALL SELECT f.path, coalesce(e.state = 'delivered' AND e.delivered_at < ?, 0)"
            " FROM files f JOIN exports e ON f.export_row = e.id",
            (delivered_before, delivered_before),
        )
