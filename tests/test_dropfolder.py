"""The drop-folder source (kind = "folder"): Blackboard SIS snapshot files dropped into
a folder, taken once each when complete, typed by their header row, delivered in type
order and archived with a time stamp — run as a user would."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fetchkit import config_data, write_config
from stress.crash import FolderCrashWorld, folder_crash_loop
from watching import Watcher, wait_for

from cli import run_cli
from exportmon.crashpoints import ENVIRONMENT

#: Blackboard Learn SIS snapshot flat-file headers (pipe-separated).
HEADERS = {
    "users": "EXTERNAL_PERSON_KEY|USER_ID|USER_NAME|FIRSTNAME|LASTNAME|EMAIL|DATA_SOURCE_KEY",
    "courses": "EXTERNAL_COURSE_KEY|COURSE_ID|COURSE_NAME|DATA_SOURCE_KEY",
    "memberships": "EXTERNAL_COURSE_KEY|EXTERNAL_PERSON_KEY|ROLE|DATA_SOURCE_KEY",
}
TYPES = [
    {"name": "users", "header_has": ["EXTERNAL_PERSON_KEY", "USER_ID"]},
    {"name": "courses", "header_has": ["EXTERNAL_COURSE_KEY", "COURSE_ID"]},
    {"name": "memberships", "header_has": ["EXTERNAL_COURSE_KEY", "EXTERNAL_PERSON_KEY"]},
]
ORDER = ["users", "courses", "memberships"]
STAMPED = re.compile(r"^(?P<stem>[^.]+)\.\d{8}T\d{6}Z(?:-\d+)?\.txt$")


def row(kind: str, number: int) -> str:
    """One data row of a snapshot file of ``kind``."""
    if kind == "users":
        return f"P{number}|u{number}|user{number}|Ann|Lee {number}|u{number}@uni.example|SIS"
    if kind == "courses":
        return f"C{number}|c{number}|Course {number}|SIS"
    return f"C{number % 7}|P{number}|Student|SIS"


def snapshot(kind: str, rows: int = 5) -> bytes:
    lines = [HEADERS[kind], *(row(kind, n) for n in range(1, rows + 1))]
    return ("\n".join(lines) + "\n").encode()


class World:
    """A folder monitor: the drop folder, the archive, the destination, the state."""

    def __init__(self, tmp_path: Path, **source: object) -> None:
        self.inbox = tmp_path / "outbox"
        self.processed = tmp_path / "processed"
        self.delivered = tmp_path / "delivered"
        self.state = tmp_path / "state"
        self.inbox.mkdir()
        table = {
            "kind": "folder",
            "path": str(self.inbox),
            "patterns": ["*.txt", "*.csv", "*.zip"],
            "settle": "1s",
            "archive": str(self.processed),
            "export_id": 1,
            **source,
        }
        data = config_data(
            self.state,
            table,
            ids=(1,),
            allow_hosts=(),
            poll_interval="1s",
            sub_dirs=True,
            deliver={"to": str(self.delivered), "order": ORDER},
        )
        data["types"] = TYPES
        self.config = write_config(tmp_path / "monitors", data, "sis")

    def drop(self, name: str, data: bytes, *, age: float = 5.0) -> Path:
        """Write a complete file, its modification time ``age`` seconds ago."""
        path = self.inbox / name
        path.write_bytes(data)
        moment = time.time() - age
        os.utime(path, (moment, moment))
        return path

    def run_once(self, env: dict[str, str] | None = None):
        return run_cli("-c", self.config, "run", "--once", env=env)

    def ledger(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.state / "ledger.sqlite") as db:
            return db.execute(sql).fetchall()

    def archived(self) -> list[str]:
        return sorted(os.listdir(self.processed)) if self.processed.exists() else []


class SlowWriter(threading.Thread):
    """Writes a snapshot file the way a slow exporter does: header, then row by row."""

    def __init__(self, path: Path, kind: str, rows: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.path, self.kind, self.rows, self.pause = path, kind, rows, pause
        self.data = snapshot(kind, rows)
        self.done = threading.Event()

    def run(self) -> None:
        lines = self.data.splitlines(keepends=True)
        with open(self.path, "wb") as handle:
            for line in lines:
                handle.write(line)
                handle.flush()
                time.sleep(self.pause)
        self.done.set()


def test_snapshot_files_written_slowly_in_random_order_go_once_each_in_type_order(tmp_path):
    world = World(tmp_path, settle="2s")
    kinds = list(ORDER)
    random.Random(17).shuffle(kinds)
    watcher = Watcher(world.config, args=("-v",))
    try:
        writers = []
        for kind in kinds:
            writer = SlowWriter(world.inbox / f"{kind}.txt", kind, rows=12, pause=0.15)
            writer.start()
            writers.append(writer)
        # Taken only once complete: nothing is delivered while a writer still writes.
        while not all(w.done.is_set() for w in writers):
            assert not world.delivered.exists() or not any(world.delivered.rglob("*.txt"))
            time.sleep(0.05)
        wait_for(lambda: len(world.archived()) == 3, timeout=60)
    finally:
        code, log = watcher.stop()
    assert code == 0, log
    for writer in writers:
        delivered = world.delivered / writer.kind / f"{writer.kind}.txt"
        assert delivered.read_bytes() == writer.data
    assert sorted(STAMPED.match(n).group("stem") for n in world.archived()) == sorted(ORDER)
    assert os.listdir(world.inbox) == []
    rows = world.ledger(
        "SELECT e.export_type, e.state, d.state FROM deliveries d"
        " JOIN exports e ON d.export_row = e.id ORDER BY d.id"
    )
    assert rows == [(kind, "delivered", "done") for kind in ORDER]
    assert world.ledger("SELECT state FROM mails") == [("archived",)] * 3
    assert world.ledger("SELECT export_type, rows FROM files ORDER BY id") == [
        (kind, 12) for kind in ORDER
    ]


def test_a_file_of_no_known_type_is_reported_once_and_left(tmp_path):
    world = World(tmp_path)
    world.drop("grades.csv", b"STUDENT;GRADE\nP1;A\n")
    world.drop("users.txt", snapshot("users"))
    first = world.run_once()
    assert first.code == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "grades.csv" in warnings[0]
    assert "no [[types]] rule matches its name or header (;: STUDENT, GRADE)" in warnings[0]
    again = world.run_once()
    assert again.code == 0 and "grades.csv" not in again.stderr
    assert os.listdir(world.inbox) == ["grades.csv"]
    assert [STAMPED.match(n).group("stem") for n in world.archived()] == ["users"]


def test_the_same_file_is_taken_once_and_a_replaced_one_again(tmp_path):
    world = World(tmp_path, archive="")  # the files stay in the folder
    path = world.drop("users.txt", snapshot("users", 3))
    assert world.run_once().code == 0
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*) FROM exports") == [(1,)]
    assert path.exists() and world.archived() == []
    world.drop("users.txt", snapshot("users", 4), age=3.0)  # replaced under the same name
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*), sum(state = 'delivered') FROM exports") == [(2, 2)]
    assert (world.delivered / "users" / "users.txt").read_bytes() == snapshot("users", 4)
    # Same size and name, other bytes, same modification time: still a new file.
    data = snapshot("users", 4).replace(b"Ann", b"Bea")
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*) FROM exports") == [(3,)]


def test_partial_hidden_and_linked_files_are_never_taken(tmp_path):
    world = World(tmp_path)
    elsewhere = tmp_path / "secret.txt"
    elsewhere.write_bytes(snapshot("users"))
    for name in ("users.txt.part", "users.tmp", ".users.txt", "users.txt~", "notes.doc"):
        world.drop(name, snapshot("users"))
    (world.inbox / "linked.txt").symlink_to(elsewhere)
    (world.inbox / "sub.txt").mkdir()
    world.drop("empty.txt", b"")
    result = world.run_once()
    assert result.code == 0, result.stderr
    assert world.ledger("SELECT count(*) FROM exports") == [(0,)]
    assert (world.inbox / "linked.txt").is_symlink() and elsewhere.exists()
    assert not world.delivered.exists() or list(world.delivered.rglob("*")) == []


def test_a_trigger_file_says_when_a_file_is_complete(tmp_path):
    world = World(tmp_path, trigger="{name}.done", settle="1h")
    world.drop("courses.txt", snapshot("courses"))
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*) FROM exports") == [(0,)]
    (world.inbox / "courses.txt.done").write_bytes(b"")
    result = world.run_once()
    assert result.code == 0, result.stderr
    assert [STAMPED.match(n).group("stem") for n in world.archived()] == ["courses"]
    assert os.listdir(world.inbox) == []  # the trigger is removed too


def test_a_zip_is_typed_by_its_first_member_and_unpacked(tmp_path):
    import io
    import zipfile

    world = World(tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("snapshot-users.txt", snapshot("users", 2))
    world.drop("nightly.zip", buffer.getvalue())
    result = world.run_once()
    assert result.code == 0, result.stderr
    assert (world.delivered / "users" / "snapshot-users.txt").read_bytes() == snapshot("users", 2)
    assert world.ledger("SELECT export_type FROM files") == [("users",)]


@pytest.mark.parametrize("point", ["export.delivered", "archive.moved", "deliver.placed"])
def test_a_crash_between_delivery_and_archiving_processes_nothing_twice(tmp_path, point):
    world = World(tmp_path)
    for kind in ORDER:
        world.drop(f"{kind}.txt", snapshot(kind))
    killed = world.run_once(env={ENVIRONMENT: point})
    assert killed.code == -9, killed.stderr
    finished = world.run_once()
    assert finished.code == 0, finished.stderr
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*) FROM deliveries WHERE state = 'done'") == [(3,)]
    assert world.ledger("SELECT count(*) FROM exports") == [(3,)]
    assert world.ledger("SELECT state FROM mails") == [("archived",)] * 3
    assert sorted(STAMPED.match(n).group("stem") for n in world.archived()) == sorted(ORDER)
    assert os.listdir(world.inbox) == []


def test_config_mistakes_are_one_line_naming_the_key(tmp_path):
    base = {"kind": "folder", "path": str(tmp_path / "in")}
    cases = [
        ({}, None, "source.archive"),
        ({"archive": "done", "trigger": "done"}, None, "source.trigger"),
        ({"archive": "done", "patterns": []}, None, "source.patterns"),
        ({"archive": "done"}, [{"name": "x", "name_pattern": "("}], "types[0].name_pattern"),
        ({"archive": "done"}, [{"name": "x"}], "types[0]"),
        ({"path": None, "archive": "done"}, None, "source.path"),
    ]
    for source, types, key in cases:
        table = {k: v for k, v in {**base, **source}.items() if v is not None}
        data = config_data(tmp_path / "state", table, ids=(1,), allow_hosts=())
        if types is not None:
            data["types"] = types
        config = write_config(tmp_path / "monitors", data, "bad")
        result = run_cli("-c", config, "status")
        assert key in result.stderr, (source, result.stderr)
        assert "Traceback" not in result.stderr


def test_two_ids_need_an_export_id(tmp_path):
    table = {"kind": "folder", "path": str(tmp_path), "archive": ""}
    data = config_data(tmp_path / "state", table, ids=(1, 2), allow_hosts=())
    config = write_config(tmp_path / "monitors", data, "two")
    result = run_cli("-c", config, "run", "--once")
    assert result.code == 2 and "source.export_id" in result.stderr


def test_a_plain_file_can_be_pushed_by_hand(tmp_path, ftp_server):
    users = tmp_path / "users.txt"
    users.write_bytes(snapshot("users"))
    result = run_cli(
        "push-ftp",
        "--json",
        "--url",
        f"ftp://127.0.0.1:{ftp_server.port}",
        "--user",
        ftp_server.user,
        "--password-command",
        f"printf %s {ftp_server.password}",
        "--to",
        tmp_path / "local",
        users,
    )
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and {r["name"] for r in records} == {"users.txt"}
    assert (tmp_path / "local" / "users.txt").read_bytes() == snapshot("users")


def test_a_file_waits_while_one_of_an_earlier_type_is_still_written(tmp_path):
    world = World(tmp_path, settle="2s")
    world.drop("courses.txt", snapshot("courses"))
    writer = SlowWriter(world.inbox / "users.txt", "users", rows=30, pause=0.25)
    writer.start()
    wait_for(lambda: (world.inbox / "users.txt").exists())
    held = run_cli("-c", world.config, "explain", "--json", world.inbox / "courses.txt")
    (verdict,) = [json.loads(line) for line in held.stdout.splitlines()]
    assert verdict["outcome"] == "wait"
    assert verdict["reason"] == "waits for the users file users.txt"
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*) FROM exports") == [(0,)]
    writer.join()
    wait_for(lambda: time.time() - (world.inbox / "users.txt").stat().st_mtime > 2.1)
    assert world.run_once().code == 0
    assert world.ledger("SELECT export_type FROM exports ORDER BY id") == [
        ("users",),
        ("courses",),
    ]


@pytest.mark.slow
def test_killed_runs_take_every_dropped_file_exactly_once(tmp_path):
    world = FolderCrashWorld(tmp_path / "world", seed=5, rows=3000)
    figures = folder_crash_loop(world, kills=16, batches=3, seed=5, report=print)
    print(figures.table())
    print(figures.details())
    assert figures.problems == []
    assert figures.kills >= 16 and figures.files >= 9
    assert figures.lost == figures.duplicated == figures.partial == figures.archived_early == 0
    assert figures.archived == figures.files


def test_the_same_bytes_dropped_again_are_a_new_export_archived_again(tmp_path):
    world = World(tmp_path)
    world.drop("users.txt", snapshot("users"), age=10)
    assert world.run_once().code == 0
    world.drop("users.txt", snapshot("users"), age=5)  # the next night, unchanged
    assert world.run_once().code == 0
    assert world.ledger("SELECT count(*), sum(state = 'delivered') FROM exports") == [(2, 2)]
    assert len(world.archived()) == 2
    assert {(world.processed / n).read_bytes() for n in world.archived()} == {snapshot("users")}


def test_an_archive_on_another_file_system_gets_a_durable_copy(tmp_path):
    import shutil
    import tempfile

    other = Path(tempfile.mkdtemp(prefix="exportmon-archive-", dir="/dev/shm"))
    try:
        assert os.stat(other).st_dev != os.stat(tmp_path).st_dev
        world = World(tmp_path, archive=str(other / "processed"))
        original = world.drop("courses.txt", snapshot("courses"))
        mtime = original.stat().st_mtime_ns
        result = world.run_once()
        assert result.code == 0, result.stderr
        (name,) = os.listdir(other / "processed")
        assert STAMPED.match(name).group("stem") == "courses"
        copy = other / "processed" / name
        assert copy.read_bytes() == snapshot("courses") and copy.stat().st_mtime_ns == mtime
        assert os.listdir(world.inbox) == []
        assert world.ledger("SELECT state FROM mails") == [("archived",)]
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_a_dry_run_speaks_of_dropped_files(tmp_path):
    world = World(tmp_path)
    world.drop("users.txt", snapshot("users"))
    plan = run_cli("-c", world.config, "run", "--once", "--dry-run")
    assert plan.code == 0, plan.stderr
    assert "would take the dropped file users.txt" in plan.stdout + plan.stderr
    assert "attached" not in plan.stdout + plan.stderr
    assert world.archived() == [] and (world.inbox / "users.txt").exists()
