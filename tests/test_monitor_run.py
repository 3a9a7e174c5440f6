"""One run wrapper: every command and library use records exactly one run in the ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monitoring import load, open_ledger, write_monitor

from cli import run_cli
from exportmon.actions.fetch import fetch
from exportmon.actions.monitor_run import current_run, monitor_run, recorded_run
from exportmon.errors import LockedError

MAIL = Path(__file__).parent / "fixtures/itrp-gem/non_export.eml"


def _monitor(tmp_path):
    path = write_monitor(tmp_path)
    shutil.copy(MAIL, tmp_path / "mails")
    return path, load(path)


def test_fetch_used_as_a_library_records_a_run(tmp_path):
    _, monitor = _monitor(tmp_path)
    monitor.dirs.create()
    with open_ledger(monitor) as ledger:
        result = fetch(monitor, ledger)
        runs = ledger.runs()
    assert not result.failed
    assert [(r.command, r.status) for r in runs] == [("fetch", "ok")]
    assert json.loads(runs[0].summary or "{}")["downloaded"] == 0


def test_work_inside_a_run_joins_it(tmp_path):
    _, monitor = _monitor(tmp_path)
    with monitor_run(monitor, "run --once") as run:
        fetch(monitor, run.ledger)
        with recorded_run(monitor, run.ledger, "fetch") as inner:
            assert inner is run is current_run()
    with open_ledger(monitor) as ledger:
        assert [r.command for r in ledger.runs()] == ["run --once"]
    assert current_run() is None


def test_a_run_that_raises_is_recorded_failed_and_a_second_process_is_refused(tmp_path):
    _, monitor = _monitor(tmp_path)
    with pytest.raises(RuntimeError), monitor_run(monitor, "fetch"):
        with pytest.raises(LockedError), monitor_run(monitor, "prune"):
            pass
        raise RuntimeError("boom")
    with open_ledger(monitor) as ledger:
        assert [(r.command, r.status) for r in ledger.runs()] == [("fetch", "failed")]


def test_a_dry_run_records_nothing_and_creates_nothing(tmp_path):
    _, monitor = _monitor(tmp_path)
    with monitor_run(monitor, "fetch", dry_run=True) as run:
        fetch(monitor, run.ledger, dry_run=True)
    assert not monitor.dirs.root.exists()


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["fetch"], "fetch"),
        (["run", "--once"], "run --once"),
        (["prune", "--older-than", "1d"], "prune"),
    ],
)
def test_each_command_records_one_run(tmp_path, args, command):
    path, monitor = _monitor(tmp_path)
    assert run_cli("-c", path, "fetch").code == 0  # a ledger for prune to work on
    result = run_cli("-c", path, *args)
    assert result.code == 0, result.output
    with open_ledger(monitor) as ledger:
        runs = [(r.command, r.status) for r in ledger.runs()]
    assert runs == [(command, "ok"), ("fetch", "ok")]
