"""Hostile CSV files: broken quoting, line endings, NUL bytes, encodings, BOMs, a 2 GB line.

Every case rewrites (``[csv] col_sep = ";"``), so the file is parsed, not only copied.
"""

from __future__ import annotations

import os
from pathlib import Path

from .cases import Case, Scene

#: Size of the single-line file (2 GiB by default; smaller for a quick local run).
LINE_BYTES = int(os.environ.get("EXPORTMON_HOSTILE_LINE_BYTES", str(2 * 1024**3)))
#: Peak memory allowed to the exportmon process that meets that line.
LINE_RSS_LIMIT_KIB = 1024 * 1024


def rewriting(scene: Scene) -> None:
    scene.config["csv"] = {"col_sep": ";"}


def _attached(content: bytes, name: str = "5-14-hostile.csv", check=None):
    def build(scene: Scene) -> None:
        rewriting(scene)
        scene.attach(name, content)
        if check is not None:
            scene.check(lambda result: check(scene.delivered / name))

    return build


def _mixed_endings(path: Path) -> None:
    assert path.read_bytes() == b"id;name\r\n1;a\r\n2;b\r\n3;c\r\n"


def _bom_dropped(path: Path) -> None:
    assert path.read_bytes() == b"id;name\n1;a\n"


def _nul_kept(path: Path) -> None:
    assert path.read_bytes() == b"id;name\n1;a\x00b\n"


def _ragged(path: Path) -> None:
    assert path.read_bytes() == b"id;name\n1\n2;b;extra\n"


def _write_single_line(path: Path, size: int) -> None:
    """``size`` bytes of one CSV line of short values, written in blocks (never in memory)."""
    block = b"value," * (1024 * 1024 // 6)
    with open(path, "wb") as out:
        out.write(b"id,name\n")
        written = 0
        while written < size:
            chunk = block[: size - written]
            out.write(chunk)
            written += len(chunk)
        out.write(b"end\n")


def _single_line(scene: Scene) -> None:
    rewriting(scene)
    scene.allow_local()
    source = scene.base / "served" / "5-15-one-line.csv"
    source.parent.mkdir()
    _write_single_line(source, LINE_BYTES)
    scene.export(scene.web.add("/exports/5-15-one-line.csv", source), token="one-line")
    scene.measure_memory = True

    def memory_bounded(result) -> None:
        assert result.peak_rss_kib is not None
        print(f"csv-2gb-single-line: {LINE_BYTES} byte line, peak RSS {result.peak_rss_kib} KiB")
        assert result.peak_rss_kib < LINE_RSS_LIMIT_KIB, (
            f"peak RSS {result.peak_rss_kib} KiB for a {LINE_BYTES} byte line"
        )

    scene.check(memory_bounded)


CASES = [
    Case(
        "csv-unterminated-quote",
        "csv",
        _attached(b'id,name\n1,"never closed\n2,b\n'),
        message=r"unterminated quoted value",
    ),
    Case(
        "csv-text-after-quote",
        "csv",
        _attached(b'id,name\n1,"a"b\n'),
        message=r"text after a closing quote",
    ),
    Case(
        "csv-mixed-line-endings",
        "csv",
        _attached(b"id,name\r\n1,a\n2,b\r3,c\r\n", check=_mixed_endings),
        code=0,
        outcome="delivered",
    ),
    Case(
        "csv-nul-bytes",
        "csv",
        _attached(b"id,name\n1,a\x00b\n", check=_nul_kept),
        code=0,
        outcome="delivered",
    ),
    Case(
        "csv-invalid-utf8",
        "csv",
        _attached(b"id,name\n1,caf\xe9\n"),
        message=r"line 2: not valid utf-8-sig \(byte e9\)",
    ),
    Case(
        "csv-overlong-utf8",
        "csv",
        _attached(b"id,name\n1,\xc0\xaf\n"),
        message=r"line 2: not valid utf-8-sig",
    ),
    Case(
        "csv-utf8-bom",
        "csv",
        _attached(b"\xef\xbb\xbfid,name\n1,a\n", check=_bom_dropped),
        code=0,
        outcome="delivered",
    ),
    Case(
        "csv-utf16-bom",
        "csv",
        _attached("id,name\n1,a\n".encode("utf-16")),
        message=r"line 1: not valid utf-8-sig \(byte ff\)",
    ),
    Case(
        "csv-ragged-rows",
        "csv",
        _attached(b"id,name\n1\n2,b,extra\n", check=_ragged),
        code=0,
        outcome="delivered",
    ),
    Case("csv-empty-file", "csv", _attached(b""), code=0, outcome="delivered"),
    Case("csv-2gb-single-line", "csv", _single_line, message=r"line 2: .*longer than 64 MiB"),
]
