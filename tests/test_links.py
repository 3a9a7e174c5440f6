"""exportmon never writes through a symbolic link it did not create.

Each case plants a link where exportmon writes (a temporary name, a sub-folder
of a destination, a state file) pointing at a file or folder outside, and checks
that the outside stays as it was.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from exportmon.atomic import atomic_copy, atomic_write
from exportmon.deliver import IN_PROGRESS, Outgoing
from exportmon.deliver.local import LocalDestination
from exportmon.errors import UnsafePathError
from exportmon.log import get_logger, log_file_name, monitor_context
from exportmon.paths import MonitorDirs
from exportmon.safe_open import open_folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every destination, holding one precious file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("precious\n")
    return folder


def untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text() == "precious\n"


def source_file(tmp_path: Path, content: bytes = b"id\n1\n") -> Outgoing:
    path = tmp_path / "source.csv"
    path.write_bytes(content)
    return Outgoing.from_path(path, "5-1-sites.csv")


def test_a_link_at_the_temporary_name_is_replaced_not_followed(tmp_path, outside):
    target = tmp_path / "dest" / "5-1-sites.csv"
    target.parent.mkdir()
    (target.parent / f"5-1-sites.csv{IN_PROGRESS}").symlink_to(outside / "precious.txt")
    atomic_copy(source_file(tmp_path).source, target, suffix=IN_PROGRESS)
    assert target.read_bytes() == b"id\n1\n"
    assert not target.is_symlink()
    assert not (target.parent / f"5-1-sites.csv{IN_PROGRESS}").exists()
    untouched(outside)


def test_a_link_at_the_final_name_is_replaced_not_written_through(tmp_path, outside):
    target = tmp_path / "5-1-sites.csv"
    target.symlink_to(outside / "precious.txt")
    with atomic_write(target) as handle:
        handle.write(b"new\n")
    assert not target.is_symlink() and target.read_bytes() == b"new\n"
    untouched(outside)


@pytest.mark.parametrize("sub_dirs", ["sites", "sites/deeper"])
def test_a_linked_sub_folder_of_a_destination_is_refused(tmp_path, outside, sub_dirs):
    destination = tmp_path / "dest"
    destination.mkdir()
    first = sub_dirs.partition("/")[0]
    (destination / first).symlink_to(outside)
    local = LocalDestination(destination)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        local.put(source_file(tmp_path), f"{sub_dirs}/5-1-sites.csv")
    untouched(outside)


def test_a_link_deeper_in_a_destination_is_refused(tmp_path, outside):
    destination = tmp_path / "dest"
    (destination / "sites").mkdir(parents=True)
    (destination / "sites" / "inner").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        LocalDestination(destination).put(source_file(tmp_path), "sites/inner/x/5-1-sites.csv")
    untouched(outside)


def test_a_destination_that_is_itself_a_link_is_the_users_choice(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    LocalDestination(tmp_path / "alias").put(source_file(tmp_path), "sites/5-1-sites.csv")
    assert (real / "sites" / "5-1-sites.csv").read_bytes() == b"id\n1\n"


def test_holds_does_not_count_a_link_to_an_equal_file(tmp_path):
    item = source_file(tmp_path)
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "5-1-sites.csv").symlink_to(item.source)
    assert not LocalDestination(destination).holds("5-1-sites.csv", item.bytes, None)
    (destination / "sites").symlink_to(tmp_path)
    assert not LocalDestination(destination).holds("sites/source.csv", item.bytes, None)


def test_open_folder_refuses_dot_dot_and_links(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(UnsafePathError):
        open_folder(tmp_path, ["a", ".."])
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafePathError):
        open_folder(tmp_path, ["b"])
    os.close(open_folder(tmp_path, ["a", "c"], create=True))
    assert (tmp_path / "a" / "c").is_dir()


@pytest.mark.parametrize("folder", ["downloads", "log", "pids", "tmp"])
def test_a_linked_state_sub_folder_is_refused(tmp_path, outside, folder):
    root = tmp_path / "state"
    root.mkdir()
    (root / folder).symlink_to(outside)
    with pytest.raises(UnsafePathError):
        MonitorDirs(root).create()
    untouched(outside)


def test_a_link_planted_at_the_log_file_is_not_appended_to(tmp_path, outside, caplog):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / log_file_name("777")).symlink_to(outside / "precious.txt")
    with caplog.at_level(logging.WARNING), monitor_context("777", log_dir):
        get_logger("test").error("this goes to stderr only")
    assert "symbolic link" in caplog.text
    untouched(outside)


def test_the_log_file_is_created_owner_only(tmp_path):
    with monitor_context("777", tmp_path):
        get_logger("test").error("a line")
    path = tmp_path / log_file_name("777")
    assert path.stat().st_mode & 0o777 == 0o600
    assert "a line" in path.read_text()
