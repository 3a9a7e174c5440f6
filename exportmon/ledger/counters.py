"""Running totals that only ever grow: what was delivered and what failed, ever.

The other tables are pruned, so sums over them fall; these counters are raised in
the same transaction as the change they count and are never lowered, which is
what a Prometheus counter promises. They are kept per export id (``''`` for
exports without one) or per destination.

=======================  ===========================================================
name                     counts
=======================  ===========================================================
delivered_exports        exports that became ``delivered``
delivered_files          their files
delivered_rows           the rows of those files
delivered_bytes          the bytes of those files
export_failures          failed attempts at a step of an export
destination_files        files delivered to a destination
destination_bytes        the bytes of those files
destination_failures     failed deliveries to a destination
=======================  ===========================================================
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from exportmon.ledger.db import Database

COUNTERS = (
    "delivered_exports",
    "delivered_files",
    "delivered_rows",
    "delivered_bytes",
    "export_failures",
    "destination_files",
    "destination_bytes",
    "destination_failures",
)


@dataclass
class Counter:
    name: str
    #: The export id as text, ``''`` for none (or for a destination's counter).
    export_id: str
    destination: str
    value: int


def raise_counter(
    db: sqlite3.Connection,
    name: str,
    amount: int,
    *,
    export_id: int | None = None,
    destination: str = "",
) -> None:
    """In the open transaction ``db``: add ``amount`` to counter ``name``."""
    if name not in COUNTERS:
        raise ValueError(f"not a counter: {name}")
    if amount <= 0:
        return
    db.execute(
        "INSERT INTO counters (name, export_id, destination, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, export_id, destination) DO UPDATE SET value = value + excluded.value",
        (name, "" if export_id is None else str(export_id), destination, amount),
    )


def count_delivered_export(db: sqlite3.Connection, row_id: int) -> None:
    """In the open transaction ``db``: count export ``row_id`` and its files as delivered."""
    export_id, files, rows, size = db.execute(
        "SELECT e.export_id, count(f.id), coalesce(sum(f.rows), 0), coalesce(sum(f.bytes), 0)"
        " FROM exports e LEFT JOIN files f ON f.export_row = e.id WHERE e.id = ?"
        " GROUP BY e.id",
        (row_id,),
    ).fetchone()
    raise_counter(db, "delivered_exports", 1, export_id=export_id)
    raise_counter(db, "delivered_files", files, export_id=export_id)
    raise_counter(db, "delivered_rows", rows, export_id=export_id)
    raise_counter(db, "delivered_bytes", size, export_id=export_id)


class CounterRecords(Database):
    """Reading the running totals."""

    def counters(self) -> list[Counter]:
        """Every counter with its value."""
        return self._all(Counter, "SELECT * FROM counters ORDER BY name, export_id, destination")
