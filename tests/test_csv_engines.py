"""The fast CSV engine (polars) against the reference (csv module) engines: the same bytes,
the same record counts, the same errors, on generated files, awkward cases and the gem's
fixture; the reference alone when polars is missing."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from gem_output import GEM_OPTIONS, REWRITTEN
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exportmon.errors import CsvError
from exportmon.files import csv_fast
from exportmon.files.csv_rewrite import Dialect, rewrite_csv

GEM = Dialect(**GEM_OPTIONS)
JOB = {"col_sep": "|", "quote_char": ":", "row_sep": "##\n"}


@contextmanager
def reference_only():
    """Rewrites inside use the reference engines (as without polars)."""
    original = csv_fast.supports
    csv_fast.supports = lambda *args: False
    try:
        yield
    finally:
        csv_fast.supports = original


def outcome(source: Path, target: Path, dialect: Dialect) -> tuple:
    """What a rewrite gave: output bytes, records and engine, or the error (paths removed)."""
    try:
        result = rewrite_csv(source, target, dialect)
    except CsvError as exc:
        return ("error", exc.one_line().replace(str(source), "SOURCE"), None)
    return (target.read_bytes(), result.records, result.engine)


def compare_engines(data: bytes, dialect: Dialect) -> str | None:
    """Rewrite ``data`` with both engines, assert the same outcome, return the fast side's
    engine (``None`` after an error)."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.csv"
        source.write_bytes(data)
        fast = outcome(source, Path(folder) / "fast.csv", dialect)
        with reference_only():
            reference = outcome(source, Path(folder) / "reference.csv", dialect)
    assert fast[:2] == reference[:2], (data, dialect)
    assert reference[2] != csv_fast.NAME
    return fast[2]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few records, so that files span many blocks and cuts are exercised."""
    monkeypatch.setattr(csv_fast, "BLOCK", 97)


def records_to_csv(rows, *, quote_all: bool, line_end: str, final_newline: bool) -> str:
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator=line_end, quoting=quoting).writerows(rows)
    text = buffer.getvalue()
    return text if final_newline else text[: -len(line_end)]


cell = st.text(alphabet=st.sampled_from(list("ab ,;|\"'\r\n#:é\t\ufeff0")), max_size=7)
dialects = st.builds(
    Dialect,
    row_sep=st.sampled_from([None, "\n", "\r\n", "##\n", "#"]),
    col_sep=st.sampled_from([",", ";", "|", "\t", "::"]),
    quote_char=st.sampled_from(['"', "'", ":"]),
    quoting=st.sampled_from(["minimal", "gem", "all", "nonnumeric", "none"]),
    encoding=st.sampled_from(["utf-8-sig", "utf-8"]),
    output_encoding=st.sampled_from(["utf-8", "utf-8-sig"]),
    replace_newlines=st.sampled_from([None, " ", "<newline>", ""]),
)


def usable(dialect: Dialect) -> bool:
    return dialect.quote_char not in dialect.col_sep + (dialect.row_sep or "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 5),
    data=st.data(),
    quote_all=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    bom=st.booleans(),
    dialect=dialects,
)
def test_well_formed_files_give_the_same_bytes(
    width, data, quote_all, line_end, final_newline, bom, dialect
):
    assume(usable(dialect))
    rows = data.draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1))
    text = records_to_csv(rows, quote_all=quote_all, line_end=line_end, final_newline=final_newline)
    compare_engines(("\ufeff" if bom else "").encode() + text.encode(), dialect)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=st.sampled_from(list('ab,"\r\n \ufeff')), max_size=60),
    dialect=dialects,
)
def test_any_text_gives_the_same_bytes_or_the_same_error(text, dialect):
    """Malformed input (stray quotes, blank lines, ragged rows, bare \\r...) included."""
    assume(usable(dialect))
    compare_engines(text.encode(), dialect)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=40))
def test_any_bytes_give_the_same_bytes_or_the_same_error(data):
    compare_engines(data, GEM)


def test_the_fast_engine_does_the_work_on_a_plain_export(tmp_path):
    rows = [["id", "name", "note"]] + [[str(n), f"name {n}", 'a, "b"\nc'] for n in range(50)]
    data = records_to_csv(rows, quote_all=False, line_end="\r\n", final_newline=True).encode()
    for options in ({}, JOB, {**JOB, "quoting": "gem"}, {**JOB, "quoting": "all"}):
        dialect = Dialect(**options)
        assert compare_engines(data, dialect) == csv_fast.NAME, options
        assert compare_engines(data, Dialect(**options, replace_newlines=" ")) == csv_fast.NAME


AWKWARD = {
    "empty and quoted empty": b'a,b,c\n1,,""\n"",,\n',
    "embedded line breaks": b'a,b\n"x\r\ny","p\nq"\n"r\rs",t\n',
    "quote characters": b'a,b\n"say ""hi""",\'single\'\n":colon:","""x"""\n',
    "separators inside values": b'a,b\n"x,y","p|q;r##s"\n"#","::"\n',
    "bom": b"\xef\xbb\xbfa,b\n1,2\n",
    "two boms": b"\xef\xbb\xbf\xef\xbb\xbfa,b\n1,2\n",
    "bom on a later line": b"a,b\n\xef\xbb\xbf1,2\n",
    "no final newline": b'a,b\n1,"2\n3"',
    "whitespace-only values": b'a,b\n , \n"  ",\t\n',
    "unicode": 'naam,stad\nJosé,Zürich\n中文,"Ærø, 😀"\n'.encode(),
    "crlf": b"a,b\r\n1,2\r\n",
    "bare cr line endings": b"a,b\r1,2\r",
    "blank line": b"a,b\n\n1,2\n",
    "blank line at the end": b"a,b\n1,2\n\n",
    "ragged rows": b"a,b,c\n1,2\n3,4,5,6\n",
    "one column": b'a\n\n""\nb\n',
    "empty file": b"",
    "only a bom": b"\xef\xbb\xbf",
    "quote inside an unquoted value": b'a,b\nx"y,z\n',
    "text after a closing quote": b'a,b\n"x"y,z\n',
    "doubled quotes around text": b'a,b\n""a"",z\n',
    "unterminated quote": b'a,b\n1,"open\n2,3\n',
    "invalid utf-8": b"a,b\n1,\xff\n",
    "nul": b"a,b\n\x00,z\n",
    "long record": b"a,b\n" + b'"' + b"x\n" * 500 + b'",y\n',
}


@pytest.mark.parametrize("name", list(AWKWARD))
@pytest.mark.parametrize(
    "options",
    [
        {},
        JOB,
        {**JOB, "quoting": "gem"},
        {**JOB, "quoting": "gem", "replace_newlines": "<newline>"},
        {"col_sep": ";", "row_sep": "\r\n", "quoting": "all"},
        {"quoting": "gem", "encoding": "utf-8", "output_encoding": "utf-8-sig"},
    ],
    ids=["default", "minimal", "gem", "gem-newlines", "all", "sig"],
)
def test_awkward_files_give_the_same_bytes_or_the_same_error(name, options):
    compare_engines(AWKWARD[name], Dialect(**options))


def test_the_gem_fixture_with_the_fast_engine(tmp_path, gem_fixtures):
    import zipfile

    with zipfile.ZipFile(gem_fixtures / "20130923-072313-export.zip") as archive:
        archive.extractall(tmp_path / "export")
    for source in sorted((tmp_path / "export").glob("*.csv")):
        kind = source.stem.rsplit("-", 1)[1]
        assert compare_engines(source.read_bytes(), GEM) == csv_fast.NAME
        rewrite_csv(source, tmp_path / source.name, GEM)
        assert REWRITTEN[kind] in (tmp_path / source.name).read_text()


def test_a_block_holding_a_row_separator_character_is_formatted_by_the_reference(tmp_path):
    # minimal quoting quotes values holding "#" of "##\n"; polars would not.
    rows = [["a", "b"]] + [[f"{n}", "plain"] for n in range(40)] + [["x#y", "z"]]
    data = records_to_csv(rows, quote_all=False, line_end="\n", final_newline=True).encode()
    assert compare_engines(data, Dialect(**JOB)) == csv_fast.NAME
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    rewrite_csv(source, tmp_path / "out.csv", Dialect(**JOB))
    assert (tmp_path / "out.csv").read_bytes().endswith(b":x#y:|z##\n")


def test_progress_adds_up_to_the_file_size_also_when_the_fast_engine_gives_up(tmp_path):
    advanced = []

    def progress(description, total):
        return advanced.append, lambda: None

    for data in (b"a,b\n" + b'1,"x\ny"\n' * 100, b"a,b\n" + b"1,2\n" * 100 + b"\n3,4\n"):
        advanced.clear()
        source = tmp_path / "in.csv"
        source.write_bytes(data)
        rewrite_csv(source, tmp_path / "out.csv", GEM, progress=progress)
        assert sum(advanced) == len(data)


def test_memory_stays_flat_on_a_large_file_with_both_engines(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(csv_fast, "BLOCK", 256 * 1024)
    source = tmp_path / "big.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for number in range(200_000):
            writer.writerow([number, "some text, quoted", "", "line\nbreak", number * 1.5])
    size = source.stat().st_size
    for engine in ("fast", "reference"):
        tracemalloc.start()
        try:
            if engine == "reference":
                with reference_only():
                    result = rewrite_csv(source, tmp_path / "out.csv", GEM)
            else:
                result = rewrite_csv(source, tmp_path / "out.csv", GEM)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (engine == "fast") == (result.engine == csv_fast.NAME)
        assert size > 8_000_000
        assert peak < size / 4, f"{engine}: peak {peak} bytes for a {size} byte file"


def test_without_polars_the_reference_engines_do_the_work(tmp_path, gem_fixtures):
    """polars is an optional speed-up: blocked from importing, nothing changes but speed."""
    source = tmp_path / "in.csv"
    source.write_bytes(b'a,b\n1,"x\ny"\n2,\n')
    script = (
        "import sys; sys.modules['polars'] = None\n"
        "from pathlib import Path\n"
        "from exportmon.files import csv_fast\n"
        "from exportmon.files.csv_rewrite import Dialect, rewrite_csv\n"
        "assert not csv_fast.available()\n"
        "result = rewrite_csv(Path(sys.argv[1]), Path(sys.argv[2]), "
        "Dialect(quoting='gem', col_sep='|'))\n"
        "print(result.engine)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "python"
    assert (tmp_path / "out.csv").read_bytes() == b'a|b\n1|"x\ny"\n2|""\n'
    assert compare_engines(source.read_bytes(), Dialect(quoting="gem", col_sep="|")) == "polars"
