"""Unzipping: the gem's fixture with and without sub-dirs, hostile archives refused cleanly,
all-or-nothing extraction (also when the process is killed), and the `exportmon unzip` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from cli import run_cli
from exportmon.errors import ExtractError
from exportmon.files.unzip import ZipLimits, extraction_dir, unzip

GEM_ZIP = "20130923-072313-export.zip"
GEM_FILES = [
    "5-20130923-072312-calendars.csv",
    "5-20130923-072312-organizations.csv",
    "5-20130923-072312-organizations_contact_details.csv",
    "5-20130923-072312-sites.csv",
]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def gem_zip(tmp_path, gem_fixtures) -> Path:
    target = tmp_path / "downloads" / GEM_ZIP
    target.parent.mkdir()
    target.write_bytes((gem_fixtures / GEM_ZIP).read_bytes())
    return target


# --- the gem's fixture ------------------------------------------------------------------


def test_gem_zip_is_extracted_beside_the_download(gem_zip):
    files = unzip(gem_zip)
    folder = gem_zip.parent / "20130923-072313-export"
    assert extraction_dir(gem_zip) == folder
    assert sorted(f.name for f in files) == GEM_FILES
    assert sorted(p.name for p in folder.iterdir()) == GEM_FILES
    calendars = (folder / GEM_FILES[0]).read_text()
    assert "30,,,24x7 except Sunday 5:00am until Noon,mon,00:00,24:00\n" in calendars
    organizations = (folder / GEM_FILES[1]).read_text()
    assert (
        '27,,,0,Microsoft Corporation,0,,,,,"Global product licensing sales contact for Widget '
        'International, Corp.: Brian Waymore\nEmail: brian.waymore@microsoft.com"\n'
    ) in organizations
    sites = (folder / GEM_FILES[3]).read_text()
    assert (
        '14,,,0,IT Training Facility,"4465 San Felipe Street, Suite 1508",Houston,TX,77027,US,'
        "Central Time (US & Canada),\n"
    ) in sites
    for extracted in files:
        assert extracted.path == folder / extracted.name
        assert extracted.bytes == extracted.path.stat().st_size
        assert extracted.sha256 == hashlib.sha256(extracted.path.read_bytes()).hexdigest()
    # Nothing but the download and its folder: no staging folder left.
    assert sorted(p.name for p in gem_zip.parent.iterdir()) == [
        "20130923-072313-export",
        GEM_ZIP,
    ]


def test_sub_dirs_put_each_file_in_a_folder_named_after_its_export_type(gem_zip):
    files = unzip(gem_zip, sub_dirs=True)
    folder = gem_zip.parent / "20130923-072313-export"
    expected = {
        "calendars/5-20130923-072312-calendars.csv",
        "organizations/5-20130923-072312-organizations.csv",
        "organizations_contact_details/5-20130923-072312-organizations_contact_details.csv",
        "sites/5-20130923-072312-sites.csv",
    }
    assert {f.name for f in files} == expected
    assert {str(p.relative_to(folder)) for p in folder.rglob("*.csv")} == expected


def test_extracting_again_replaces_the_earlier_folder(gem_zip):
    unzip(gem_zip, sub_dirs=True)
    files = unzip(gem_zip)
    folder = gem_zip.parent / "20130923-072313-export"
    assert sorted(p.name for p in folder.iterdir()) == GEM_FILES
    assert all(f.path.is_file() for f in files)


def test_output_dir_puts_the_extraction_folder_elsewhere(gem_zip, tmp_path):
    files = unzip(gem_zip, output_dir=tmp_path / "elsewhere")
    assert {f.path.parent for f in files} == {tmp_path / "elsewhere" / "20130923-072313-export"}


# --- hostile archives -------------------------------------------------------------------


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return path


def _patch_central(path: Path, field_offset: int, fmt: str, value: int, entry: int = 0) -> None:
    """Overwrite a field of the ``entry``-th central directory record."""
    data = bytearray(path.read_bytes())
    position = -1
    for _ in range(entry + 1):
        position = data.index(b"PK\x01\x02", position + 1)
    struct.pack_into(fmt, data, position + field_offset, value)
    path.write_bytes(bytes(data))


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _encrypted(path: Path) -> Path:
    # zipfile cannot write encrypted entries: set the "encrypted" flag bit by hand,
    # in the local header and in the central directory.
    _zip(path, [("secret.csv", b"x" * 50)])
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, data.index(b"PK\x03\x04") + 6, 0x1)
    struct.pack_into("<H", data, data.index(b"PK\x01\x02") + 8, 0x1)
    path.write_bytes(bytes(data))
    return path


def _nul_in_name(path: Path) -> Path:
    _zip(path, [("evil.csv#.txt", b"x")])
    path.write_bytes(path.read_bytes().replace(b"evil.csv#.txt", b"evil.csv\0.txt"))
    return path


def _crc_mismatch(path: Path) -> Path:
    _zip(path, [("good.csv", b"a,b\n1,2\n"), ("bad.csv", b"x,y\n" * 100)])
    _patch_central(path, 16, "<I", 0xDEADBEEF, entry=1)
    return path


def _lying_size(path: Path) -> Path:
    # Declares 100 bytes, but the deflate stream holds 5 MB: never more than the
    # declared size is inflated, and the CRC then fails.
    _zip(path, [("big.csv", os.urandom(8).hex().encode() * 300_000)])
    _patch_central(path, 24, "<I", 100)
    return path


def _truncated(path: Path, gem_fixtures: Path) -> Path:
    data = (gem_fixtures / GEM_ZIP).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


HOSTILE = {
    # kind: (builder, entry named in the message, words in the message, limits)
    "zip slip": (lambda p, g: _zip(p, [("../evil.csv", b"x")]), "../evil.csv", "zip slip", None),
    "deep zip slip": (
        lambda p, g: _zip(p, [("ok/../../evil.csv", b"x")]),
        "ok/../../evil.csv",
        "zip slip",
        None,
    ),
    "windows zip slip": (
        lambda p, g: _zip(p, [("..\\evil.csv", b"x")]),
        "..\\\\evil.csv",
        "zip slip",
        None,
    ),
    "absolute path": (
        lambda p, g: _zip(p, [("/tmp/evil.csv", b"x")]),
        "/tmp/evil.csv",
        "absolute",
        None,
    ),
    "drive letter": (
        lambda p, g: _zip(p, [("C:/evil.csv", b"x")]),
        "C:/evil.csv",
        "absolute",
        None,
    ),
    "symlink": (
        lambda p, g: _zip(p, [("a.csv", b"x"), (_symlink_info("link.csv"), b"/etc/passwd")]),
        "link.csv",
        "symbolic link",
        None,
    ),
    "encrypted": (
        lambda p, g: _encrypted(p),
        "secret.csv",
        "encrypted",
        None,
    ),
    "size bomb": (
        lambda p, g: _zip(p, [("big.csv", b"0" * 5000)]),
        "big.csv",
        "max_entry_bytes",
        ZipLimits(max_entry_bytes=1000),
    ),
    "total size": (
        lambda p, g: _zip(p, [("a.csv", b"0" * 600), ("b.csv", b"0" * 600)]),
        "b.csv",
        "max_total_bytes",
        ZipLimits(max_total_bytes=1000),
    ),
    "lying header": (
        lambda p, g: _lying_size(p),
        "big.csv",
        "CRC mismatch",
        ZipLimits(max_entry_bytes=1_000_000),
    ),
    "ratio bomb": (
        lambda p, g: _zip(p, [("zeros.csv", b"\0" * 3_000_000)]),
        "zeros.csv",
        "compression ratio",
        None,
    ),
    "duplicate": (
        lambda p, g: _zip(p, [("a.csv", b"1"), ("a.csv", b"2")]),
        "a.csv",
        "duplicate",
        None,
    ),
    "duplicate by case": (
        lambda p, g: _zip(p, [("Sites.csv", b"1"), ("sites.CSV", b"2")]),
        "sites.CSV",
        "duplicate",
        None,
    ),
    "duplicate by separator": (
        lambda p, g: _zip(p, [("a/b.csv", b"1"), ("a\\b.csv", b"2")]),
        "a\\\\b.csv",
        "duplicate",
        None,
    ),
    "file and folder": (
        lambda p, g: _zip(p, [("a", b"1"), ("a/b.csv", b"2")]),
        "a",
        "also a folder",
        None,
    ),
    "crc mismatch": (lambda p, g: _crc_mismatch(p), "bad.csv", "CRC mismatch", None),
    "truncated": (lambda p, g: _truncated(p, g), None, "not a readable zip", None),
    "too many entries": (
        lambda p, g: _zip(p, [(f"{n}.csv", b"x") for n in range(4)]),
        None,
        "more than max_entries",
        ZipLimits(max_entries=3),
    ),
    "nul byte": (
        lambda p, g: _nul_in_name(p),
        "evil.csv\\x00.txt",
        "NUL",
        None,
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(kind, tmp_path, gem_fixtures):
    build, entry, words, limits = HOSTILE[kind]
    downloads = tmp_path / "state" / "downloads"
    downloads.mkdir(parents=True)
    archive = build(downloads / "export.zip", gem_fixtures)
    before = tree(tmp_path)

    with pytest.raises(ExtractError) as raised:
        unzip(archive, limits=limits)

    message = raised.value.one_line()
    assert "\n" not in message
    assert str(archive) in message and words in message, message
    if entry is not None:
        assert repr(entry.replace("\\\\", "\\").replace("\\x00", "\0")) in message, message
    assert raised.value.retryable is False
    assert tree(tmp_path) == before, "nothing may be written anywhere"


def test_cli_refuses_a_hostile_zip_with_one_line_and_exit_1(tmp_path):
    archive = _zip(tmp_path / "evil.zip", [("good.csv", b"a\n"), ("../../evil.csv", b"x")])
    before = tree(tmp_path)
    result = run_cli("unzip", archive)
    assert result.code == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "evil.zip" in errors[0] and "../../evil.csv" in errors[0]
    assert tree(tmp_path) == before


def test_a_nested_zip_is_extracted_as_a_file_never_opened(tmp_path):
    inner = _zip(tmp_path / "inner.zip", [("../evil.csv", b"x")])
    outer = _zip(tmp_path / "outer.zip", [("inner.zip", inner.read_bytes()), ("a.csv", b"1\n")])
    files = unzip(outer)
    assert sorted(f.name for f in files) == ["a.csv", "inner.zip"]
    assert (tmp_path / "outer" / "inner.zip").read_bytes() == inner.read_bytes()
    assert not (tmp_path / "outer" / "inner").exists()
    assert not (tmp_path / "evil.csv").exists()


def test_folders_in_the_archive_are_kept_and_folder_entries_ignored(tmp_path):
    archive = _zip(tmp_path / "x.zip", [("dir/", b""), ("dir/5-1-sites.csv", b"1\n")])
    assert [f.name for f in unzip(archive)] == ["dir/5-1-sites.csv"]
    assert [f.name for f in unzip(archive, sub_dirs=True)] == ["sites/dir/5-1-sites.csv"]


def test_a_failure_at_the_last_entry_leaves_no_folder_and_keeps_an_earlier_one(tmp_path):
    archive = _crc_mismatch(tmp_path / "x.zip")
    with pytest.raises(ExtractError):
        unzip(archive)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zip"]
    # An earlier good extraction of the same name survives a failed one.
    good = tmp_path / "x"
    good.mkdir()
    (good / "keep.csv").write_text("kept")
    with pytest.raises(ExtractError):
        unzip(archive)
    assert (good / "keep.csv").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.zip"]


def test_a_staging_folder_left_by_a_crash_is_removed_by_the_next_run(gem_zip):
    stale = gem_zip.parent / ".20130923-072313-export.partial"
    stale.mkdir()
    (stale / "half-written.csv").write_text("partial")
    unzip(gem_zip)
    assert not stale.exists()
    assert sorted(p.name for p in (gem_zip.parent / "20130923-072313-export").iterdir()) == (
        GEM_FILES
    )


def test_a_killed_unzip_leaves_no_partial_folder_and_a_rerun_completes(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for number in range(3000):
            out.writestr(f"{number:04d}.csv", os.urandom(2000).hex())
    stage = tmp_path / ".many.partial"
    child = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "unzip", str(archive)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (stage.is_dir() and len(list(stage.iterdir())) > 5):
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert stage.is_dir(), "the kill should have caught the extraction half-way"
    assert not (tmp_path / "many").exists(), "no final folder before the extraction is complete"

    result = run_cli("unzip", archive)
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3000
    assert len(list((tmp_path / "many").iterdir())) == 3000
    assert not stage.exists()


# --- the CLI ----------------------------------------------------------------------------


def test_cli_prints_every_file_and_passes_csv_through(gem_zip, gem_fixtures, tmp_path):
    csv_file = tmp_path / "dummy.csv"
    csv_file.write_bytes((gem_fixtures / "dummy.csv").read_bytes())
    result = run_cli("unzip", gem_zip, csv_file)
    assert result.code == 0, result.stderr
    folder = gem_zip.parent / "20130923-072313-export"
    assert result.stdout.splitlines() == [str(folder / name) for name in GEM_FILES] + [
        str(csv_file)
    ]
    assert csv_file.read_bytes() == (gem_fixtures / "dummy.csv").read_bytes()


def test_cli_reads_stdin_and_writes_json_and_nul(gem_zip):
    result = run_cli("unzip", "--json", "--sub-dirs", input=f"{gem_zip}\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.code == 0
    assert records[0]["name"] == "calendars/5-20130923-072312-calendars.csv"
    assert {r["rows"] for r in records} == {78, 17, 89, 2}
    assert all(r["source"] == str(gem_zip) for r in records)
    nul = run_cli("unzip", "-0", input=f"{gem_zip}\0")
    assert nul.stdout.count("\0") == 4 and "\n" not in nul.stdout


def test_cli_limits_come_from_flags(tmp_path):
    archive = _zip(tmp_path / "x.zip", [("a.csv", b"0" * 5000)])
    assert run_cli("unzip", archive).code == 0
    refused = run_cli("unzip", "--max-entry-bytes", "1kB", archive)
    assert refused.code == 1 and "max_entry_bytes" in refused.stderr
    assert run_cli("unzip", "--max-entry-bytes", "lots", archive).code == 2


def test_cli_one_bad_archive_does_not_stop_the_others(gem_zip, tmp_path):
    bad = _crc_mismatch(tmp_path / "bad.zip")
    missing = tmp_path / "missing.zip"
    result = run_cli("unzip", bad, missing, gem_zip)
    assert result.code == 1
    assert len(result.stdout.splitlines()) == 4
    assert "bad.zip" in result.stderr and "missing.zip" in result.stderr
