"""Helpers for the monitoring tests: monitor configs written on the spot, ledgers filled
through the Ledger API, and timestamps moved with plain SQL where a test needs the past."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from exportmon.config.load import load_monitor
from exportmon.config.schema import MonitorConfig
from exportmon.ledger import Export, Ledger, from_text, to_text

NOW = datetime.now(timezone.utc)


def write_monitor(directory: Path, name: str = "shop", *, ids=(777,), extra: str = "") -> Path:
    """A valid monitor config reading a directory of mails; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    mails = directory / "mails"
    mails.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(
        f"ids = [{', '.join(map(str, ids))}]\n"
        f'root = "{directory / "state" / name}"\n'
        "[source]\n"
        'kind = "dir"\n'
        f'path = "{mails}"\n' + extra
    )
    path.chmod(0o600)
    return path


def smtp_alerts(server: Any, *, scheme: str = "submission", ca_file: Path | None = None) -> str:
    """An ``[alerts]`` table sending through the test SMTP server (password from $SMTP_PASSWORD)."""
    return (
        "[alerts]\n"
        f'smtp_url = "{scheme}://127.0.0.1:{server.port}"\n'
        f'smtp_user = "{server.user}"\n'
        'smtp_password_env = "SMTP_PASSWORD"\n'
        f'smtp_ca_file = "{ca_file or server.ca_file}"\n'
        'from = "exportmon@example.com"\n'
        'to = ["ops@example.com"]\n'
    )


def open_ledger(monitor: MonitorConfig) -> Ledger:
    return Ledger.open(monitor.dirs.ledger)


def load(path: Path) -> MonitorConfig:
    return load_monitor(path)


def ago(**delta: float) -> str:
    """Ledger text for a moment in the past, e.g. ``ago(days=2)``."""
    return to_text(NOW - timedelta(**delta))


def delivered_export(
    ledger: Ledger,
    export_id: int,
    key: str,
    *,
    files: tuple[tuple[str, str, int, int], ...] = (("people.csv", "people", 120, 4000),),
    destination: str = "/srv/in",
    download: Path | None = None,
) -> Export:
    """An export taken through every step; ``files`` are (name, type, rows, bytes)."""
    export = ledger.add_export(
        key=key, kind="link", export_id=export_id, file_name=f"{key}.zip", link="https://x/e"
    )
    ledger.advance_export(
        export.id,
        "downloaded",
        download_path=str(download) if download else None,
        bytes=sum(f[3] for f in files),
    )
    ledger.advance_export(export.id, "unpacked", files=len(files), rows=sum(f[2] for f in files))
    for name, export_type, rows, size in files:
        record = ledger.add_file(
            path=(download.parent / name) if download else f"/d/{key}/{name}",
            name=name,
            export_row=export.id,
            export_type=export_type,
            rows=rows,
            bytes=size,
        )
        delivery = ledger.start_delivery(
            destination=destination,
            source_path=record.path,
            target=name,
            file_id=record.id,
            export_row=export.id,
        )
        ledger.finish_delivery(delivery.id, bytes=size)
    return ledger.advance_export(export.id, "delivered")


def failed_export(
    ledger: Ledger, export_id: int, key: str, *, step: str = "download", error: str = "HTTP 404"
) -> Export:
    export = ledger.add_export(key=key, kind="link", export_id=export_id, file_name=f"{key}.zip")
    return ledger.fail_export(export.id, step, error, None)


def set_columns(ledger: Ledger, table: str, row_id: int, **columns: Any) -> None:
    """Overwrite columns of one row (tests use it to move records into the past)."""
    sets = ", ".join(f"{name} = ?" for name in columns)
    with sqlite3.connect(ledger.path) as db:
        db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*columns.values(), row_id))


def backdate_export(ledger: Ledger, export: Export, **delta: float) -> None:
    """Move every timestamp of an export (and its files and deliveries) back by ``delta``."""
    shift = timedelta(**delta)

    def moved(value: str | None) -> str | None:
        return to_text(from_text(value) - shift) if value else None

    tables = {
        "exports": ("id", ("created_at", "updated_at", "downloaded_at", "unpacked_at",
                           "delivered_at", "error_at")),
        "files": ("export_row", ("created_at", "updated_at")),
        "deliveries": ("export_row", ("started_at", "finished_at")),
    }  # fmt: skip
    with sqlite3.connect(ledger.path) as db:
        for table, (key, columns) in tables.items():
            rows = db.execute(
                f"SELECT id, {', '.join(columns)} FROM {table} WHERE {key} = ?", (export.id,)
            ).fetchall()
            for row_id, *values in rows:
                sets = ", ".join(f"{column} = ?" for column in columns)
                db.execute(
                    f"UPDATE {table} SET {sets} WHERE id = ?",
                    (*[moved(v) for v in values], row_id),
                )


def start_run(ledger: Ledger, at: str) -> None:
    run_id = ledger.start_run("run")
    ledger.finish_run(run_id, "ok")
    set_columns(ledger, "runs", run_id, started_at=at, finished_at=at)
