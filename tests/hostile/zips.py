"""Hostile archives: zip slip, absolute paths, symlinks, bombs, nesting, encryption, damage.

The builders are shared with ``test_unzip.py`` (which checks the unzip step alone);
here every archive comes attached to an export mail and goes through ``run --once``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

from .cases import Case, Scene


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """A deflated zip of ``entries`` (duplicate names allowed)."""
    path.write_bytes(zip_bytes(entries))
    return path


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return buffer.getvalue()


def patch_central(data: bytes, field_offset: int, fmt: str, value: int, entry: int = 0) -> bytes:
    """``data`` with a field of the ``entry``-th central directory record overwritten."""
    patched = bytearray(data)
    position = -1
    for _ in range(entry + 1):
        position = patched.index(b"PK\x01\x02", position + 1)
    struct.pack_into(fmt, patched, position + field_offset, value)
    return bytes(patched)


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def encrypted_zip() -> bytes:
    """An archive whose entry is flagged encrypted (zipfile cannot write real ones)."""
    data = bytearray(zip_bytes([("secret.csv", b"x" * 50)]))
    struct.pack_into("<H", data, data.index(b"PK\x03\x04") + 6, 0x1)
    struct.pack_into("<H", data, data.index(b"PK\x01\x02") + 8, 0x1)
    return bytes(data)


def nul_in_name_zip() -> bytes:
    return zip_bytes([("evil.csv#.txt", b"x")]).replace(b"evil.csv#.txt", b"evil.csv\0.txt")


def crc_mismatch_zip() -> bytes:
    data = zip_bytes([("good.csv", b"a,b\n1,2\n"), ("bad.csv", b"x,y\n" * 100)])
    return patch_central(data, 16, "<I", 0xDEADBEEF, entry=1)


def lying_size_zip() -> bytes:
    """Declares 100 bytes, but the deflate stream holds 5 MB."""
    data = zip_bytes([("big.csv", os.urandom(8).hex().encode() * 300_000)])
    return patch_central(data, 24, "<I", 100)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _good_entries() -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    return [("5-12-fine.csv", b"id\n1\n")]


def _attached(build, **zip_config):
    """An export mail carrying ``build()`` as ``5-12-export.zip``."""

    def scene_builder(scene: Scene) -> None:
        if zip_config:
            scene.table("zip").update(zip_config)
        scene.attach("5-12-export.zip", build())
        scene.must_not_exist(
            scene.base / "hostile-zip.csv",
            scene.root / "hostile-zip.csv",
            scene.root / "downloads" / "hostile-zip.csv",
            Path("/tmp/exportmon-hostile-zip.csv"),
        )

    return scene_builder


def _entries(*entries: tuple[zipfile.ZipInfo | str, bytes]):
    return _attached(lambda: zip_bytes([*_good_entries(), *entries]))


def _nested(scene: Scene) -> None:
    inner = zip_bytes([("../../hostile-zip.csv", b"x"), ("5-13-inner.csv", b"id\n1\n")])
    _attached(lambda: zip_bytes([("inner.zip", inner), *_good_entries()]))(scene)

    def inner_never_opened(result):
        assert (scene.delivered / "inner.zip").read_bytes() == inner
        assert not (scene.delivered / "5-13-inner.csv").exists()

    scene.check(inner_never_opened)


def _corrupt(scene: Scene) -> None:
    data = bytearray(zip_bytes([*_good_entries(), ("5-12-more.csv", os.urandom(4000))]))
    start = data.index(b"PK\x03\x04", 10) + 60
    data[start : start + 200] = os.urandom(200)
    _attached(lambda: bytes(data))(scene)


def _not_a_zip(scene: Scene) -> None:
    scene.attach("5-12-export.zip", b"%PDF-1.4 this is no zip at all\n" * 10)


CASES = [
    Case("zip-slip", "zip", _entries(("../hostile-zip.csv", b"x")), message=r"zip slip"),
    Case(
        "zip-slip-deep",
        "zip",
        _entries(("ok/../../../../hostile-zip.csv", b"x")),
        message=r"zip slip",
    ),
    Case(
        "zip-slip-backslash",
        "zip",
        _entries(("..\\..\\hostile-zip.csv", b"x")),
        message=r"zip slip",
    ),
    Case(
        "zip-absolute-path",
        "zip",
        _entries(("/tmp/exportmon-hostile-zip.csv", b"x")),
        message=r"absolute",
    ),
    Case("zip-drive-letter", "zip", _entries(("C:\\hostile-zip.csv", b"x")), message=r"absolute"),
    Case(
        "zip-symlink",
        "zip",
        _entries((symlink_info("5-12-link.csv"), b"/etc/passwd")),
        message=r"symbolic link",
    ),
    Case(
        "zip-bomb-size",
        "zip",
        _attached(
            lambda: zip_bytes([("5-12-big.csv", os.urandom(600_000))]), max_entry_bytes="500kB"
        ),
        message=r"max_entry_bytes",
    ),
    Case(
        "zip-bomb-ratio",
        "zip",
        _entries(("5-12-zeros.csv", b"\0" * 20_000_000)),
        message=r"compression ratio",
    ),
    Case(
        "zip-bomb-total",
        "zip",
        _attached(
            lambda: zip_bytes([(f"5-12-{n}.csv", os.urandom(300_000)) for n in range(4)]),
            max_total_bytes="1MB",
        ),
        message=r"max_total_bytes",
    ),
    Case(
        "zip-too-many-entries",
        "zip",
        _attached(lambda: zip_bytes([(f"5-12-{n}.csv", b"x") for n in range(30)]), max_entries=20),
        message=r"more than max_entries",
    ),
    Case("zip-lying-size", "zip", _attached(lying_size_zip), message=r"CRC mismatch"),
    Case("zip-nested", "zip", _nested, code=0, outcome="delivered"),
    Case("zip-encrypted", "zip", _attached(encrypted_zip), message=r"encrypted"),
    Case(
        "zip-truncated",
        "zip",
        _attached(
            lambda: truncated(zip_bytes([*_good_entries(), ("5-12-more.csv", os.urandom(50_000))]))
        ),
        message=r"not a readable zip",
    ),
    Case("zip-crc-mismatch", "zip", _attached(crc_mismatch_zip), message=r"CRC mismatch"),
    Case("zip-corrupt-stream", "zip", _corrupt, message=r"5-12-export\.zip"),
    Case("zip-not-a-zip", "zip", _not_a_zip, message=r"not a readable zip"),
    Case("zip-nul-in-name", "zip", _attached(nul_in_name_zip), message=r"NUL"),
    Case(
        "zip-duplicate-names", "zip", _entries(("5-12-fine.csv", b"other\n")), message=r"duplicate"
    ),
    Case(
        "zip-duplicate-by-case",
        "zip",
        _entries(("5-12-FINE.csv", b"other\n")),
        message=r"duplicate",
    ),
]
