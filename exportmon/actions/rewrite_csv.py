"""Rewriting one CSV file as a pipeline step, and recording it in the ledger it belongs to.

Within ``run`` rewriting is part of unpacking (:func:`exportmon.actions.unzip.unpack`);
this is the standalone step: ``exportmon unzip | exportmon rewrite-csv ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from exportmon.actions.tracking import file_record
from exportmon.files.csv_rewrite import Dialect, RewriteResult, rewrite_csv
from exportmon.progress import ProgressFactory

if TYPE_CHECKING:
    from exportmon.ledger import Ledger


def rewrite_file(
    path: Path,
    dialect: Dialect,
    *,
    output_dir: Path | None = None,
    ledger: Ledger | None = None,
    hook_path: Path | None = None,
    progress: ProgressFactory | None = None,
) -> RewriteResult:
    """Rewrite ``path`` in place (or into ``output_dir``, same name) and update its ledger
    record: size, rows, SHA-256, ``rewritten`` and, with ``output_dir``, its new path."""
    path = Path(path)
    target = Path(output_dir) / path.name if output_dir is not None else path
    record = file_record(ledger, path) if ledger is not None else None
    result = rewrite_csv(path, target, dialect, progress=progress, hook_path=hook_path)
    if ledger is not None and record is not None:
        ledger.update_file(
            record.id,
            path=str(target.absolute()),
            bytes=result.bytes,
            rows=result.rows,
            sha256=result.sha256,
            rewritten=1,
        )
    return result
