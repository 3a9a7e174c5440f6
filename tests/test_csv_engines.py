"""The compiled CSV engine against the reference (Python) engines: the same bytes, the
same record counts and the same errors, on generated files over every dialect, quoting
rule, encoding and column option, cut into blocks of a few bytes (so that block ends
fall inside quotes, separators, multi-byte characters and \\r\\n pairs), on hostile and
awkward files and on the gem's fixture.

The number of generated cases comes from the hypothesis profile: ``ci`` (the default)
or ``thorough`` (tens of thousands: ``EXPORTMON_HYPOTHESIS_PROFILE=thorough`` or
``pytest --hypothesis-profile=thorough tests/test_csv_engines.py``).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from gem_output import GEM_OPTIONS, REWRITTEN
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exportmon.errors import CsvError
from exportmon.files import csv_fast, csv_rewrite
from exportmon.files.csv_rewrite import Dialect, rewrite_csv

GEM = Dialect(**GEM_OPTIONS)
JOB = {"col_sep": "|", "quote_char": ":", "row_sep": "##\n"}
#: Where the generated files are written: memory, so that fsync costs nothing.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


@contextmanager
def engine(name: str, block: int | None = None):
    """Rewrites inside use the ``c`` or the ``python`` (reference) engines."""
    saved = os.environ.get(csv_fast.ENGINE_VARIABLE), csv_fast.BLOCK
    os.environ[csv_fast.ENGINE_VARIABLE] = name
    if block is not None:
        csv_fast.BLOCK = block
    try:
        yield
    finally:
        if saved[0] is None:
            del os.environ[csv_fast.ENGINE_VARIABLE]
        else:
            os.environ[csv_fast.ENGINE_VARIABLE] = saved[0]
        csv_fast.BLOCK = saved[1]


def outcome(source: Path, target: Path, dialect: Dialect) -> tuple:
    """What a rewrite gave: output bytes, records and engine, or the error (paths removed)."""
    try:
        result = rewrite_csv(source, target, dialect, hook_path=Path(__file__).parent)
    except CsvError as exc:
        return ("error", exc.one_line().replace(str(source), "SOURCE"), None)
    return (target.read_bytes(), result.records, result.engine)


def compare_engines(data: bytes, dialect: Dialect, block: int = 7) -> tuple:
    """Rewrite ``data`` with both engines (the compiled one in blocks of ``block``
    bytes), assert the same outcome and return it."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        source = Path(folder) / "in.csv"
        source.write_bytes(data)
        with engine("c", block):
            compiled = outcome(source, Path(folder) / "c.csv", dialect)
        with engine("python"):
            reference = outcome(source, Path(folder) / "reference.csv", dialect)
    assert compiled[:2] == reference[:2], (data, dialect, block)
    assert compiled[2] in (csv_fast.NAME, None), "the compiled engine is not built"
    assert reference[2] != csv_fast.NAME
    return compiled


def records_to_csv(rows, *, quote_all: bool, line_end: str, final_newline: bool) -> str:
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator=line_end, quoting=quoting).writerows(rows)
    text = buffer.getvalue()
    return text if final_newline else text[: -len(line_end)]


HEADER_NAMES = ["id", "name", "note", "x"]
CHARACTERS = [*"ab ,;|\"'\r\n#:é\t\ufeff0123.-+=@eE§→😀\x00x", "ab", "ä€", "\r\n"]
cell = st.lists(st.sampled_from(CHARACTERS), max_size=6).map("".join)
blocks = st.sampled_from([1, 2, 3, 4, 5, 7, 13, 64, 4096])
dialects = st.builds(
    Dialect,
    row_sep=st.sampled_from([None, "\n", "\r\n", "\r", "##\n", "#", "é\n", "§"]),
    col_sep=st.sampled_from([",", ";", "|", "\t", "::", "→", " ", "0", "e"]),
    quote_char=st.sampled_from(['"', "'", ":", "§", "a"]),
    quoting=st.sampled_from(["minimal", "gem", "all", "nonnumeric", "none"]),
    encoding=st.sampled_from(["utf-8-sig", "utf-8", "utf-8-sig", "cp1252", "utf-16"]),
    output_encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-8", "cp1252", "utf-16-le"]),
    replace_newlines=st.sampled_from([None, None, " ", "<newline>", "", "\n", "|", "\r\n"]),
    value_hook=st.sampled_from(
        [None, None, None, "csv_hooks:upper", "csv_hooks:odd_types", "csv_hooks:newline"]
    ),
    columns=st.one_of(
        st.none(),
        st.none(),
        st.lists(st.sampled_from([*HEADER_NAMES, "new", "missing"]), max_size=4).map(tuple),
    ),
    rename=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(HEADER_NAMES), st.sampled_from(["new", "ID", "a,b"])),
    ),
    missing=st.sampled_from(["error", "empty"]),
    strip_formula_guard=st.booleans(),
)


def usable(dialect: Dialect) -> bool:
    try:
        dialect.check()
    except Exception:
        return False
    return True


def encoded(text: str, dialect: Dialect) -> bytes:
    try:
        return text.encode(dialect.encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8")  # then not valid input: both must say so alike


@given(
    width=st.integers(1, 5),
    data=st.data(),
    quote_all=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    final_newline=st.booleans(),
    bom=st.booleans(),
    dialect=dialects,
    block=blocks,
)
def test_well_formed_files_give_the_same_bytes(
    width, data, quote_all, line_end, final_newline, bom, dialect, block
):
    assume(usable(dialect))
    header = data.draw(st.lists(st.sampled_from(HEADER_NAMES), min_size=width, max_size=width))
    rows = data.draw(st.lists(st.lists(cell, min_size=1, max_size=width + 1), max_size=8))
    text = records_to_csv(
        [header, *rows], quote_all=quote_all, line_end=line_end, final_newline=final_newline
    )
    compare_engines(encoded(("\ufeff" if bom else "") + text, dialect), dialect, block)


@given(
    text=st.lists(st.sampled_from([*'ab,"\r\n \ufeff', "id,", "x"]), max_size=40).map("".join),
    dialect=dialects,
    block=blocks,
)
def test_any_text_gives_the_same_bytes_or_the_same_error(text, dialect, block):
    """Malformed input (stray quotes, blank lines, ragged rows, bare \\r...) included."""
    assume(usable(dialect))
    compare_engines(encoded(text, dialect), dialect, block)


@given(data=st.binary(max_size=40), dialect=dialects, block=blocks)
def test_any_bytes_give_the_same_bytes_or_the_same_error(data, dialect, block):
    assume(usable(dialect))
    compare_engines(data, dialect, block)


@given(
    data=st.lists(
        st.sampled_from(
            [
                *(b"a", b",", b'"', b"\r", b"\n", b"\xc3\xa9", b"\xf0\x9f\x98\x80"),
                *(b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90"),
            ]
        ),
        max_size=20,
    ).map(b"".join),
    block=blocks,
)
def test_broken_utf8_anywhere_gives_the_same_error(data, block):
    compare_engines(data, GEM, block)


def test_the_compiled_engine_does_the_work_on_a_plain_export():
    rows = [["id", "name", "note"]] + [[str(n), f"name {n}", 'a, "b"\nc'] for n in range(50)]
    data = records_to_csv(rows, quote_all=False, line_end="\r\n", final_newline=True).encode()
    for options in ({}, JOB, {**JOB, "quoting": "gem"}, {**JOB, "quoting": "all"}):
        for block in (1, 3, 1024 * 1024):
            assert compare_engines(data, Dialect(**options), block)[2] == csv_fast.NAME
            newlines = Dialect(**options, replace_newlines=" ")
            assert compare_engines(data, newlines, block)[2] == csv_fast.NAME


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
    "mixed line endings": b"a,b\r\n1,2\n3,4\r5,6\r\n",
    "cr cr lf": b"a,b\r\r\n1,2\r\r\r\n",
    "blank line": b"a,b\n\n1,2\n",
    "blank lines only": b"\n\r\n\r\n",
    "blank line at the end": b"a,b\n1,2\n\n",
    "ragged rows": b"a,b,c\n1,2\n3,4,5,6\n",
    "one column": b'a\n\n""\nb\n',
    "empty file": b"",
    "only a bom": b"\xef\xbb\xbf",
    "half a bom": b"\xef\xbb",
    "quote inside an unquoted value": b'a,b\nx"y,z\n',
    "text after a closing quote": b'a,b\n"x"y,z\n',
    "space after a closing quote": b'a,b\n"x" ,z\n',
    "doubled quotes around text": b'a,b\n""a"",z\n',
    "unterminated quote": b'a,b\n1,"open\n2,3\n',
    "unterminated quote at the end": b'a,b\n1,"',
    "quote then cr": b'a,b\n"x"\r"y"\n',
    "invalid utf-8": b"a,b\n1,\xff\n",
    "truncated utf-8 at the end": b"a,b\n1,\xc3",
    "surrogate in utf-8": b"a,b\n1,\xed\xa0\x80\n",
    "overlong utf-8": b"a,b\n1,\xc0\xaf\n",
    "nul": b"a,b\n\x00,z\n",
    "nul in quotes": b'a,b\n"\x00",z\n',
    "formula guards": b"a,b\n'=1,\t+2\n'-,\t@x\n'x,''=\n",
    "numbers": "a,b\n1,-2.5\n.5,1e5\n+3E-2,٣\n1.,e5\n".encode(),
    "long record": b"a,b\n" + b'"' + b"x\n" * 500 + b'",y\n',
    "cp1252 bytes": "a,b\ncafé,naïve\n".encode("cp1252"),
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
        {"quoting": "nonnumeric", "strip_formula_guard": True},
        {"quoting": "none", "col_sep": "\t"},
        {"quoting": "gem", "encoding": "utf-8", "output_encoding": "utf-8-sig"},
        {"encoding": "cp1252", "output_encoding": "utf-16"},
        {"columns": ("b", "a", "c"), "missing": "empty", "rename": {"a": "A"}},
        {"columns": ("b",), "value_hook": "csv_hooks:odd_types"},
    ],
    ids=[
        "default",
        "minimal",
        "gem",
        "gem-newlines",
        "all",
        "nonnumeric",
        "none",
        "sig",
        "cp1252",
        "columns",
        "hook",
    ],
)
@pytest.mark.parametrize("block", [1, 2, 3, 1024 * 1024])
def test_awkward_files_give_the_same_bytes_or_the_same_error(name, options, block):
    compare_engines(AWKWARD[name], Dialect(**options), block)


@pytest.mark.parametrize("block", [1, 5, 1024 * 1024])
def test_over_long_lines_and_values_fail_alike(monkeypatch, block):
    """The limits (64 MiB) made small: a line without a break, a quoted value of many
    short lines, and values just within the limit."""
    monkeypatch.setattr(csv_rewrite, "FIELD_LIMIT", 1000)
    saved = csv.field_size_limit(1000)
    try:
        for data in (
            b"a,b\n" + b"x," * 20000 + b"\n",
            b'a,b\n"' + b"x\n" * 600 + b'",1\n',
            b'a,b\n"' + "é\n".encode() * 499 + b'",1\n',
            b"a,b\n" + b"y" * 1000 + b",1\n",
            b'a,b\n"' + b"z" * 1000 + b'",1\n',
        ):
            compare_engines(data, GEM, block)
    finally:
        csv.field_size_limit(saved)


def test_a_failing_value_hook_fails_alike():
    data = b"a,b\n1,2\nx,b\n"
    result = compare_engines(data, Dialect(value_hook="csv_hooks:boom"))
    assert result[0] == "error" and "line 1: value hook failed: ValueError: boom" in result[1]


def test_columns_select_order_rename_and_drop():
    data = b"extra,name,id\r\n1,Ann,7\r\n2,Bob\r\n\r\n3,Cy,9,more\r\n"
    dialect = Dialect(columns=("id", "name", "email"), rename={"id": "ID"}, missing="empty")
    out, records, _ = compare_engines(data, dialect)
    assert out == b"ID,name,email\r\n7,Ann,\r\n,Bob,\r\n\r\n9,Cy,\r\n"
    assert records == 5
    # a name of columns may also be the new name rename gives
    dialect = Dialect(columns=("ID", "name"), rename={"id": "ID"})
    assert compare_engines(data, dialect)[0].startswith(b"ID,name\r\n7,Ann\r\n")


def test_a_missing_column_fails_the_file_in_one_line_naming_it():
    result = compare_engines(b"id,name\n1,a\n", Dialect(columns=("id", "email")))
    assert result[0] == "error"
    assert result[1].startswith("SOURCE: line 1: column 'email' is not in the header")
    assert "'id', 'name'" in result[1] and 'missing = "empty"' in result[1]
    assert "\n" not in result[1]
    result = compare_engines(b"id,name\n1,a\n", Dialect(rename={"mail": "email"}))
    assert "column 'mail' is not in the header" in result[1]


def test_strip_formula_guard_removes_only_a_guard():
    data = b"a\n'=SUM(A1)\n\t+1\n'-2\n\t@x\n'hello\n'\n\t\n=plain\n''=x\n"
    out = compare_engines(data, Dialect(strip_formula_guard=True))[0]
    assert out == b"a\n=SUM(A1)\n+1\n-2\n@x\n'hello\n'\n\t\n=plain\n''=x\n"


def test_the_gem_fixture_with_the_compiled_engine(tmp_path, gem_fixtures):
    import zipfile

    with zipfile.ZipFile(gem_fixtures / "20130923-072313-export.zip") as archive:
        archive.extractall(tmp_path / "export")
    for source in sorted((tmp_path / "export").glob("*.csv")):
        kind = source.stem.rsplit("-", 1)[1]
        for block in (1, 64, 1024 * 1024):
            assert compare_engines(source.read_bytes(), GEM, block)[2] == csv_fast.NAME
        rewrite_csv(source, tmp_path / source.name, GEM)
        assert REWRITTEN[kind] in (tmp_path / source.name).read_text()


def test_progress_adds_up_to_the_file_size(tmp_path):
    advanced = []

    def progress(description, total):
        return advanced.append, lambda: None

    for name in ("c", "python"):
        for data in (b"a,b\n" + b'1,"x\ny"\n' * 100, b"\xef\xbb\xbfa,b\n" + b"1,2\n" * 100):
            advanced.clear()
            source = tmp_path / "in.csv"
            source.write_bytes(data)
            with engine(name, 64):
                rewrite_csv(source, tmp_path / "out.csv", GEM, progress=progress)
            assert sum(advanced) == len(data)


def test_memory_stays_flat_on_a_large_file_with_both_engines(tmp_path):
    import tracemalloc

    source = tmp_path / "big.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for number in range(200_000):
            writer.writerow([number, "some text, quoted", "", "line\nbreak", number * 1.5])
    size = source.stat().st_size
    for name in ("c", "python"):
        tracemalloc.start()
        try:
            with engine(name, 256 * 1024):
                result = rewrite_csv(source, tmp_path / "out.csv", GEM)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (name == "c") == (result.engine == csv_fast.NAME)
        assert size > 8_000_000
        assert peak < size / 4, f"{name}: peak {peak} bytes for a {size} byte file"


def test_without_the_extension_the_reference_engines_do_the_work(tmp_path):
    """The extension is an optional speed-up: missing, nothing changes but speed."""
    source = tmp_path / "in.csv"
    source.write_bytes(b'a,b\n1,"x\ny"\n2,\n')
    script = (
        "import sys; sys.modules['exportmon.files._csvengine'] = None\n"
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
    assert compare_engines(source.read_bytes(), Dialect(quoting="gem", col_sep="|"))[2] == "c"


#: Values that stay on the compiled engine's SSE2 fast path (plain, quoted, doubled
#: quotes, line breaks inside quotes, empty, formula guards) and some that leave it.
FAST_VALUES = st.sampled_from(
    [
        "",
        "plain",
        "12345",
        "a much longer plain value that runs past sixteen bytes",
        '"quoted, with a comma"',
        '"doubled "" quote"',
        '"line\nbreak"',
        '"crlf\r\nbreak"',
        "'=1+2",
        "\t@cmd",
        "é-non-ascii",
        "x" * 70,
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(FAST_VALUES, min_size=1, max_size=12), min_size=1, max_size=120),
    line_end=st.sampled_from(["\n", "\r\n"]),
    dialect=st.builds(
        Dialect,
        row_sep=st.sampled_from([None, "\n", "##\n"]),
        col_sep=st.sampled_from([",", "|", ";"]),
        quoting=st.sampled_from(["minimal", "gem", "all"]),
        replace_newlines=st.sampled_from([None, " "]),
        strip_formula_guard=st.booleans(),
    ),
    block=st.sampled_from([64, 65, 100, 1000, 4096, 1024 * 1024]),
)
def test_larger_files_on_the_fast_path_give_the_same_bytes(rows, line_end, dialect, block):
    """Files big enough for the fast path's 64-byte windows, cut into blocks whose ends
    fall anywhere inside them."""
    text = line_end.join(",".join(row) for row in rows) + line_end
    compare_engines(text.encode("utf-8"), dialect, block)
