"""`exportmon prune`: old downloads and ledger records go; undelivered work and the rest stay."""

from __future__ import annotations

import json
import os
import time

import pytest
from monitoring import backdate_export, delivered_export, load, open_ledger, write_monitor

from cli import run_cli
from exportmon.actions.prune import prune

DAY = 86400


def age(path, days):
    moment = time.time() - days * DAY
    os.utime(path, (moment, moment), follow_symlinks=False)


def export_folder(downloads, key, size=1000):
    """downloads/<key>/export.zip plus the two CSV files unpacked next to it."""
    folder = downloads / key
    folder.mkdir(parents=True)
    archive = folder / "export.zip"
    archive.write_bytes(b"z" * size)
    for name in ("people.csv", "sites.csv"):
        (folder / name).write_bytes(b"c" * 100)
    return archive


@pytest.fixture
def layout(tmp_path):
    path = write_monitor(tmp_path, "shop")
    monitor = load(path)
    monitor.dirs.create()
    downloads = monitor.dirs.downloads
    ledger = open_ledger(monitor)
    files = (("people.csv", "people", 10, 100), ("sites.csv", "sites", 2, 100))

    old = delivered_export(
        ledger, 777, "old", files=files, download=export_folder(downloads, "old")
    )
    backdate_export(ledger, old, days=100)
    recent = delivered_export(
        ledger, 777, "recent", files=files, download=export_folder(downloads, "recent")
    )
    backdate_export(ledger, recent, days=10)
    # Received long ago and still not delivered (it keeps failing): must stay.
    stuck = ledger.add_export(key="stuck", kind="link", export_id=777)
    archive = export_folder(downloads, "stuck")
    ledger.advance_export(stuck.id, "downloaded", download_path=str(archive))
    ledger.fail_export(stuck.id, "unzip", "zip is corrupt", None)
    backdate_export(ledger, stuck, days=200)

    (downloads / "crashed.part").write_bytes(b"p" * 50)
    (downloads / "fresh.part").write_bytes(b"f" * 10)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (downloads / "link").symlink_to(outside)
    for item in downloads.rglob("*"):
        age(item, 150)
    age(downloads / "fresh.part", 1)
    ledger.close()
    return path, monitor, downloads, outside


def test_dry_run_lists_what_would_go_and_changes_nothing(layout):
    path, monitor, downloads, _ = layout
    before = sorted(p for p in downloads.rglob("*"))
    result = run_cli("-c", path, "prune", "--older-than", "90d", "--dry-run")
    assert result.code == 0, result.output
    listed = set(result.stdout.splitlines())
    assert str(downloads / "old" / "export.zip") in listed
    assert str(downloads / "old") in listed
    assert sorted(p for p in downloads.rglob("*")) == before
    assert "shop: Would remove 5 files and 1 folder (1.3 kB) and " in result.stderr
    with open_ledger(monitor) as ledger:
        assert ledger.find_export("old") is not None


def test_prune_removes_old_delivered_downloads_and_leftovers_only(layout):
    path, monitor, downloads, outside = layout
    result = run_cli("-c", path, "prune", "--older-than", "90d")
    assert result.code == 0, result.output
    assert set(result.stdout.splitlines()) == {
        str(downloads / "old" / "export.zip"),
        str(downloads / "old" / "people.csv"),
        str(downloads / "old" / "sites.csv"),
        str(downloads / "old"),
        str(downloads / "crashed.part"),
        str(downloads / "link"),
    }
    assert not (downloads / "old").exists()
    assert not (downloads / "link").is_symlink() and outside.read_text() == "not ours"
    for kept in ("recent/export.zip", "recent/people.csv", "stuck/export.zip", "stuck/sites.csv",
                 "fresh.part"):  # fmt: skip
        assert (downloads / kept).exists(), kept
    assert downloads.is_dir()
    assert "shop: Removed 5 files and 1 folder (1.3 kB) and " in result.stderr
    assert "kept 6 files of exports not delivered or delivered since" in result.stderr
    with open_ledger(monitor) as ledger:
        assert ledger.find_export("old") is None
        assert ledger.find_export("recent") is not None
        assert ledger.find_export("stuck") is not None

    again = run_cli("-c", path, "prune", "--older-than", "90d")
    assert again.code == 0 and again.stdout == ""


def test_json_and_downloads_only(layout):
    path, monitor, _, outside = layout
    result = run_cli("-c", path, "prune", "--older-than", "90d", "--downloads-only", "--json")
    assert result.code == 0, result.output
    (data,) = json.loads(result.stdout)
    assert data["monitor"] == "shop" and data["dry_run"] is False
    # The link counts with its own size (the length of the path it holds).
    assert data["bytes_freed"] == 1000 + 200 + 50 + len(str(outside))
    assert data["ledger_rows"] == {}
    kinds = sorted(item["kind"] for item in data["removed"])
    assert kinds == ["dir", "file", "file", "file", "file", "file"]
    with open_ledger(monitor) as ledger:
        assert ledger.find_export("old") is not None


def test_shorter_age_still_never_touches_undelivered_work(layout):
    path, _, downloads, _ = layout
    result = run_cli("-c", path, "prune", "--older-than", "0s")
    assert result.code == 0, result.output
    assert not (downloads / "recent").exists()
    assert (downloads / "stuck" / "export.zip").exists()
    assert (downloads / "stuck" / "people.csv").exists()  # unpacked next to it: same folder


def test_the_age_comes_from_older_than_or_keep_downloads(tmp_path):
    path = write_monitor(tmp_path, "shop")
    result = run_cli("-c", path, "prune")
    assert result.code == 2 and "give --older-than" in result.stderr
    assert run_cli("-c", path, "prune", "--older-than", "soon").code == 2

    path = write_monitor(tmp_path / "b", "kept", extra="")
    path.write_text('keep_downloads = "30d"\n' + path.read_text())
    result = run_cli("-c", path, "prune", "--dry-run")
    assert result.code == 0, result.output  # never ran: nothing to do


def test_a_downloads_folder_leading_outside_the_root_is_refused(tmp_path):
    path = write_monitor(tmp_path, "shop")
    monitor = load(path)
    monitor.dirs.root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("x")
    age(elsewhere / "precious", 400)
    monitor.dirs.downloads.symlink_to(elsewhere)
    open_ledger(monitor).close()
    result = run_cli("-c", path, "prune", "--older-than", "1d")
    # The state folder's own sub-folders are never followed through a link (the
    # safety invariant), so prune stops before it looks inside.
    assert result.code == 1, result.stderr
    assert "does not write through links it did not create" in result.stderr
    assert (elsewhere / "precious").exists()


def test_prune_api_for_run(layout):
    _, monitor, downloads, _ = layout
    with open_ledger(monitor) as ledger:
        result = prune(monitor, ledger, 90 * DAY, records=False)
        assert result.ledger_rows == {} and not result.errors
        assert ledger.find_export("old") is not None
    assert not (downloads / "old").exists()
