"""The ledger: one SQLite file per monitor that records every mail, export, file and delivery.

It is the single truth for "has this export been delivered", "what failed" and
"what arrived when": a process killed at any moment resumes from it without
losing or repeating work. Every change goes through a method of :class:`Ledger`,
each one short transaction; :meth:`Ledger.atomic` makes several one.

The package has one module per aggregate, each adding its methods and its named
read queries to :class:`Ledger`; no SQL lives outside this package.

- :mod:`~exportmon.ledger.db`: the file, schema migrations, transactions, times
- :mod:`~exportmon.ledger.mails`: mails and mailbox reading state
- :mod:`~exportmon.ledger.exports`: exports and their files
- :mod:`~exportmon.ledger.deliveries`: files written to destinations
- :mod:`~exportmon.ledger.alerts`: alerts and the channels that carried them
- :mod:`~exportmon.ledger.runs`: runs, step failures and notices
- :mod:`~exportmon.ledger.counters`: running totals that never fall
- :mod:`~exportmon.ledger.pruning`: forgetting old finished records
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exportmon.ledger.alerts import Alert, AlertChannel, AlertRecords, UnsentAlerts
from exportmon.ledger.counters import COUNTERS, Counter, CounterRecords
from exportmon.ledger.db import MIGRATIONS, Database, from_text, now, to_text
from exportmon.ledger.deliveries import (
    DELIVERY_STATES,
    Delivery,
    DeliveryRecords,
    DestinationState,
    DestinationTotals,
)
from exportmon.ledger.exports import (
    EXPORT_STATES,
    Export,
    ExportFigures,
    ExportRecords,
    File,
    StalledExports,
)
from exportmon.ledger.mails import MAIL_STATES, Mail, MailboxState, MailRecords
from exportmon.ledger.pruning import Pruning, StoredPath
from exportmon.ledger.runs import Run, RunRecords, StepFailure

__all__ = [
    "COUNTERS",
    "DELIVERY_STATES",
    "EXPORT_STATES",
    "MAIL_STATES",
    "MIGRATIONS",
    "Alert",
    "AlertChannel",
    "Counter",
    "Database",
    "Delivery",
    "DestinationState",
    "DestinationTotals",
    "Export",
    "ExportFigures",
    "File",
    "Ledger",
    "Mail",
    "MailboxState",
    "Run",
    "StalledExports",
    "StepFailure",
    "StoredPath",
    "UnsentAlerts",
    "as_dict",
    "from_text",
    "now",
    "to_text",
]


class Ledger(
    MailRecords,
    ExportRecords,
    DeliveryRecords,
    AlertRecords,
    RunRecords,
    CounterRecords,
    Pruning,
):
    """An open ledger file. Safe to share between threads of one process.

    Open with :meth:`open` (creates and migrates the file) and close with
    :meth:`close` or a ``with`` block.
    """


def as_dict(record: Any) -> dict[str, Any]:
    """A ledger record as a plain dict (for ``--json`` output)."""
    return dataclasses.asdict(record)
