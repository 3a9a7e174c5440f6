"""CSV rewriting: the gem's output byte for byte, every quoting rule, line endings, encodings,
value hooks, malformed input (file and line named, original untouched), and the CLI."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from gem_output import GEM_OPTIONS, REWRITTEN
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import run_cli
from exportmon.errors import ConfigError, CsvError, UsageError
from exportmon.files import csv_fast, csv_rewrite
from exportmon.files.csv_rewrite import (
    Dialect,
    count_records,
    count_rows,
    detect_row_sep,
    rewrite_csv,
    unescape,
)

GEM_DIALECT = Dialect(**GEM_OPTIONS)
GEM_LINES = REWRITTEN


@pytest.fixture
def gem_csvs(tmp_path, gem_fixtures) -> dict[str, Path]:
    """The four CSV files of the gem's fixture zip, by export type."""
    folder = tmp_path / "export"
    with zipfile.ZipFile(gem_fixtures / "20130923-072313-export.zip") as archive:
        archive.extractall(folder)
    return {path.stem.rsplit("-", 1)[1]: path for path in folder.glob("*.csv")}


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def rewritten(tmp_path: Path, data: bytes | str, dialect: Dialect, **kwargs) -> bytes:
    source = write(tmp_path / "in.csv", data)
    rewrite_csv(source, tmp_path / "out.csv", dialect, **kwargs)
    return (tmp_path / "out.csv").read_bytes()


# --- the gem's output -------------------------------------------------------------------


def test_gem_quoting_reproduces_the_gems_rewritten_files(gem_csvs, tmp_path):
    for kind, source in gem_csvs.items():
        target = tmp_path / "out" / source.name
        result = rewrite_csv(source, target, GEM_DIALECT)
        text = target.read_bytes().decode("utf-8")
        assert GEM_LINES[kind] in text, kind
        assert text.endswith("##\n")
        assert result.engine == (csv_fast.NAME if csv_fast.available() else "python")
    sites = (tmp_path / "out" / gem_csvs["sites"].name).read_bytes()
    assert sites == (
        b"ITRP ID|Source|Source ID|Disabled|Name|Address|City|State|Zip|Country|Time Zone|"
        b"Remarks##\n"
        b"13|::|::|0|Widget Data Center|1919 Briar Oaks Lane|Houston|TX|77027|US|"
        b"Central Time (US & Canada)|::##\n"
        b"14|::|::|0|IT Training Facility|4465 San Felipe Street, Suite 1508|Houston|TX|77027|US|"
        b"Central Time (US & Canada)|::##\n"
    )


def test_a_value_hook_like_the_gems_csv_value_proc_gives_the_same_output(
    gem_csvs, tmp_path, monkeypatch
):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "gem_hooks.py").write_text(
        "import re\n\ndef newline(value):\n    return re.sub(r'\\r?\\n', '<newline>', value)\n"
    )
    dialect = Dialect(
        row_sep="##\n", col_sep="|", quote_char=":", quoting="gem", value_hook="gem_hooks:newline"
    )
    for kind, source in gem_csvs.items():
        target = tmp_path / "hooked" / source.name
        rewrite_csv(source, target, dialect, hook_path=hooks)
        assert GEM_LINES[kind] in target.read_text(), kind


def test_rewriting_with_the_default_dialect_gives_the_input_back(gem_csvs, tmp_path):
    for source in gem_csvs.values():
        result = rewrite_csv(source, tmp_path / source.name, Dialect())
        assert (tmp_path / source.name).read_bytes() == source.read_bytes()
        assert result.engine == (csv_fast.NAME if csv_fast.available() else "stdlib")
        assert result.row_sep == "\n"


def test_rows_are_records_not_lines(gem_csvs):
    organizations = gem_csvs["organizations"]
    lines = organizations.read_bytes().count(b"\n")
    assert count_records(organizations) == 18 < lines
    assert count_rows(organizations) == 17
    result = rewrite_csv(organizations, organizations, GEM_DIALECT)
    assert (result.records, result.rows) == (18, 17)


# --- quoting rules ----------------------------------------------------------------------

ROWS = [["id", "name", "note"], ["1", "", 'say "hi"'], ["2.5", "a;b", "x|y"], ["-3", "p#q", ""]]


def _input(rows: list[list[str]], quoting: int = csv.QUOTE_MINIMAL) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerows(rows)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            Dialect(col_sep=";", quoting="minimal"),
            'id;name;note\n1;;"say ""hi"""\n2.5;"a;b";x|y\n-3;p#q;\n',
        ),
        (
            Dialect(col_sep="|", quoting="all", row_sep="\r\n"),
            '"id"|"name"|"note"\r\n"1"|""|"say ""hi"""\r\n"2.5"|"a;b"|"x|y"\r\n"-3"|"p#q"|""\r\n',
        ),
        (
            Dialect(col_sep=";", quoting="nonnumeric"),
            '"id";"name";"note"\n1;"";"say ""hi"""\n2.5;"a;b";"x|y"\n-3;"p#q";""\n',
        ),
        (
            Dialect(col_sep="|", quoting="gem", quote_char="'", row_sep="#\n"),
            "id|name|note#\n1|''|say \"hi\"#\n2.5|a;b|'x|y'#\n-3|p#q|''#\n",
        ),
        (
            Dialect(col_sep="|", quoting="minimal", quote_char="'", row_sep="#\n"),
            "id|name|note#\n1||say \"hi\"#\n2.5|a;b|'x|y'#\n-3|'p#q'|#\n",
        ),
        (
            Dialect(col_sep="::", quoting="minimal"),
            'id::name::note\n1::::"say ""hi"""\n2.5::a;b::x|y\n-3::p#q::\n',
        ),
        (
            Dialect(col_sep="\t", quoting="none"),
            'id\tname\tnote\n1\t\tsay "hi"\n2.5\ta;b\tx|y\n-3\tp#q\t\n',
        ),
    ],
    ids=["minimal", "all", "nonnumeric", "gem", "minimal-row-sep-chars", "multichar", "none"],
)
def test_quoting_rules(tmp_path, dialect, expected):
    assert rewritten(tmp_path, _input(ROWS), dialect).decode() == expected


def test_quoting_none_refuses_a_value_that_needs_quotes(tmp_path):
    source = write(tmp_path / "in.csv", 'a,b\n1,"x,y"\n')
    with pytest.raises(CsvError, match=r"in\.csv: line 2: .*quoting is none"):
        rewrite_csv(source, tmp_path / "out.csv", Dialect(quoting="none"))
    assert not (tmp_path / "out.csv").exists()


def test_a_record_of_one_empty_value_is_not_written_as_a_blank_line(tmp_path):
    data = 'a\n""\nb\n'
    assert rewritten(tmp_path, data, Dialect()) == b'a\n""\nb\n'
    assert rewritten(tmp_path, data, Dialect(replace_newlines=" ")) == b'a\n""\nb\n'


def test_a_carriage_return_or_line_feed_in_a_value_is_always_quoted(tmp_path):
    # csv.writer before Python 3.13 would leave these unquoted.
    data = 'a,b\n"x\ry",z\n' + "a,b\n" * 2000 + '"p\nq",r\n'
    assert rewritten(tmp_path, data, Dialect(row_sep="\n")) == data.encode()
    assert rewritten(tmp_path, data, Dialect(row_sep="#")) == (
        data.replace("\n", "#").replace('"p#q"', '"p\nq"').encode()
    )


cell = st.text(alphabet=st.sampled_from(list("ab ,;|\"'\r\n#:é")), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(cell, min_size=1, max_size=4), min_size=1, max_size=5),
    col_sep=st.sampled_from([",", ";", "|", "\t"]),
    row_sep=st.sampled_from(["\n", "\r\n", "##\n"]),
    quote_char=st.sampled_from(['"', "'", ":"]),
    quoting=st.sampled_from(["minimal", "all"]),
)
def test_the_python_engine_writes_what_the_stdlib_engine_writes(
    tmp_path_factory, rows, col_sep, row_sep, quote_char, quoting
):
    """The stdlib path is the reference: other engines must match it byte for byte."""
    if quote_char in col_sep or quote_char in row_sep:
        return
    dialect = Dialect(row_sep=row_sep, col_sep=col_sep, quote_char=quote_char, quoting=quoting)
    records = list(csv.reader(io.StringIO(_input(rows, csv.QUOTE_ALL)), strict=True))
    stdlib = csv_rewrite._StdlibEngine(dialect, row_sep).format(records)
    python = csv_rewrite._PythonEngine(dialect, row_sep, None).format(records)
    assert python == stdlib
    if row_sep != "##\n":  # and it reads back as the same records
        back = csv.reader(io.StringIO(python), delimiter=col_sep, quotechar=quote_char)
        assert list(back) == records


# --- line endings and encodings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a,b\r\n1,2\r\n", "\r\n"),
        ("a,b\n1,2\n", "\n"),
        ("a,b\r1,2\r", "\r"),
        ('"a\nx",b\r\n1,2\r\n', "\r\n"),
        ("a,b", "\n"),
    ],
)
def test_row_sep_auto_is_the_first_records_line_ending(tmp_path, data, expected):
    source = write(tmp_path / "in.csv", data)
    assert detect_row_sep(source) == expected
    result = rewrite_csv(source, tmp_path / "out.csv", Dialect(col_sep=";"))
    assert result.row_sep == expected
    assert (tmp_path / "out.csv").read_bytes().endswith(expected.encode())


def test_a_bom_is_dropped_and_other_encodings_are_converted(tmp_path):
    assert rewritten(tmp_path, b"\xef\xbb\xbfa,b\n1,2\n", Dialect()) == b"a,b\n1,2\n"
    latin = "naam,stad\nJosé,Zürich\n".encode("cp1252")
    assert rewritten(tmp_path, latin, Dialect(encoding="cp1252")) == (
        "naam,stad\nJosé,Zürich\n".encode()
    )
    with_bom = rewritten(tmp_path, "a\n1\n2\n", Dialect(output_encoding="utf-8-sig"))
    assert with_bom == b"\xef\xbb\xbfa\n1\n2\n"


def test_replace_newlines_replaces_crlf_and_lf_inside_values(tmp_path):
    data = 'a,b\r\n"one\r\ntwo","three\nfour\rfive"\r\n'
    assert rewritten(tmp_path, data, Dialect(replace_newlines=" / ")) == (
        b'a,b\r\none / two,"three / four\rfive"\r\n'
    )


# --- malformed input --------------------------------------------------------------------

BAD = {
    "unterminated quote": (b'a,b\n1,2\n3,"abc\n4,5\n', 3, "unterminated quoted value"),
    "text after quote": (b'a,b\n1,2\n3,"abc"x\n', 3, "text after a closing quote"),
    "invalid utf-8": (b"a,b\n1,2\n" + b"x,y\n" * 50_000 + b"3,\xff\n", 50_003, "not valid"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_malformed_csv_names_file_and_line_and_leaves_the_original(kind, tmp_path):
    data, line, words = BAD[kind]
    source = write(tmp_path / "broken.csv", data)
    with pytest.raises(CsvError) as raised:
        rewrite_csv(source, source, GEM_DIALECT)
    message = raised.value.one_line()
    assert f"{source}: line {line}: {words}" in message, message
    assert "left unchanged" in message
    assert source.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv"]
    with pytest.raises(CsvError, match=f"line {line}"):
        count_records(source)


def test_an_unencodable_value_names_its_line(tmp_path):
    source = write(tmp_path / "in.csv", "a\nb\n中\n")
    with pytest.raises(CsvError, match=r"line 3: '中' cannot be written in latin-1"):
        rewrite_csv(source, source, Dialect(output_encoding="latin-1"))
    assert source.read_text() == "a\nb\n中\n"


def test_a_failing_value_hook_names_its_line(tmp_path):
    (tmp_path / "failing_hook.py").write_text(
        "def check(value):\n"
        "    if value == 'bad':\n"
        "        raise ValueError('no')\n"
        "    return value\n"
    )
    source = write(tmp_path / "in.csv", "a\nok\nbad\n")
    with pytest.raises(CsvError, match=r"line 3: value hook failed: ValueError: no"):
        rewrite_csv(source, source, Dialect(value_hook="failing_hook:check"), hook_path=tmp_path)


def test_a_value_hook_may_return_none_or_other_types(tmp_path):
    (tmp_path / "typed_hook.py").write_text(
        "def typed(value):\n    return {'none': None, 'int': 7, 'float': 2.5}.get(value, value)\n"
    )
    data = "a,b\nnone,int\nfloat,text\n"
    expected = {
        "gem": b'a|b\n""|7\n2.5|text\n',
        "minimal": b"a|b\n|7\n2.5|text\n",
        "all": b'"a"|"b"\n""|"7"\n"2.5"|"text"\n',
        "nonnumeric": b'"a"|"b"\n""|7\n2.5|"text"\n',
        "none": b"a|b\n|7\n2.5|text\n",
    }
    for quoting, output in expected.items():
        dialect = Dialect(value_hook="typed_hook:typed", quoting=quoting, col_sep="|")
        assert rewritten(tmp_path, data, dialect, hook_path=tmp_path) == output, quoting
        with_newlines = Dialect(
            value_hook="typed_hook:typed", quoting=quoting, replace_newlines=" "
        )
        assert rewritten(tmp_path, data, with_newlines, hook_path=tmp_path) == output.replace(
            b"|", b","
        ), quoting


@pytest.mark.parametrize("spec", ["no_such_module:f", "json:no_such_function", "not a spec"])
def test_a_value_hook_that_cannot_be_loaded_is_a_config_error(tmp_path, spec):
    source = write(tmp_path / "in.csv", "a\n")
    with pytest.raises(ConfigError):
        rewrite_csv(source, source, Dialect(value_hook=spec))


@pytest.mark.parametrize(
    "dialect",
    [
        Dialect(quote_char="ab"),
        Dialect(col_sep=""),
        Dialect(row_sep=""),
        Dialect(quote_char="|", col_sep="|"),
        Dialect(quoting="sometimes"),
        Dialect(encoding="klingon"),
    ],
)
def test_an_impossible_dialect_is_a_usage_error(tmp_path, dialect):
    with pytest.raises(UsageError):
        rewrite_csv(write(tmp_path / "in.csv", "a\n"), tmp_path / "out.csv", dialect)


def test_unescape():
    assert unescape(r"##\n") == "##\n"
    assert unescape(r"\r\n|\t|\\n|\x1f|\u00e9") == "\r\n|\t|\\n|\x1f|é"
    assert unescape(r"\q") == r"\q"


# --- the CLI ----------------------------------------------------------------------------


def test_cli_reproduces_the_gem_with_escaped_separators(gem_csvs):
    paths = sorted(gem_csvs.values())
    result = run_cli(
        "rewrite-csv",
        "--quoting",
        "gem",
        "--col-sep",
        "|",
        "--row-sep",
        r"##\n",
        "--quote-char",
        ":",
        "--replace-newlines",
        "<newline>",
        *paths,
    )
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [str(p) for p in paths]
    for kind, path in gem_csvs.items():
        assert GEM_LINES[kind] in path.read_text()


def test_cli_preset_itrp_gem_quotes_empty_values(tmp_path):
    source = write(tmp_path / "x.csv", "a,b\n1,\n")
    assert run_cli("rewrite-csv", "--preset", "itrp-gem", source).code == 0
    assert source.read_text() == 'a,b\n1,""\n'


def test_cli_output_dir_json_and_passthrough(gem_csvs, tmp_path):
    readme = write(tmp_path / "README.txt", "not csv")
    sites = gem_csvs["sites"]
    before = sites.read_bytes()
    result = run_cli(
        "rewrite-csv",
        "--json",
        "--output-dir",
        tmp_path / "out",
        "--col-sep",
        ";",
        input=json.dumps({"path": str(sites), "name": "sites/x.csv"}) + f"\n{readme}\n",
    )
    assert result.code == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["path"] == str(tmp_path / "out" / sites.name)
    assert first["name"] == "sites/x.csv" and first["rows"] == 2 and first["source"] == str(sites)
    assert second == {"path": str(readme)}
    assert sites.read_bytes() == before
    assert (tmp_path / "out" / sites.name).read_text().startswith("ITRP ID;Source;")


def test_cli_bad_options_are_usage_errors_and_bad_files_do_not_stop_the_others(tmp_path):
    good = write(tmp_path / "good.csv", "a,b\n1,2\n")
    assert run_cli("rewrite-csv", "--quote-char", "ab", good).code == 2
    assert run_cli("rewrite-csv", "--quoting", "sometimes", good).code == 2
    assert run_cli("rewrite-csv", "--value-hook", "nope:nothing", good).code == 2
    broken = write(tmp_path / "broken.csv", b'a\n"open\n')
    result = run_cli("rewrite-csv", "--col-sep", ";", broken, tmp_path / "missing.csv", good)
    assert result.code == 1
    assert result.stdout.splitlines() == [str(good)]
    assert f"{broken}: line 2: unterminated" in result.stderr
    assert "missing.csv" in result.stderr
    assert good.read_text() == "a;b\n1;2\n"
    assert broken.read_bytes() == b'a\n"open\n'


def test_cli_value_hook_from_the_current_folder(tmp_path):
    (tmp_path / "cli_hooks.py").write_text("def upper(value):\n    return value.upper()\n")
    source = write(tmp_path / "x.csv", "a,b\nc,d\n")
    result = run_cli("rewrite-csv", "--value-hook", "cli_hooks:upper", source.name, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert source.read_text() == "A,B\nC,D\n"


# --- columns by name ----------------------------------------------------------------------


def test_columns_from_the_csv_table_of_a_monitor(tmp_path, monkeypatch):
    from exportmon.config.load import load_monitor

    monkeypatch.setenv("IMAP_PASSWORD", "x")
    config = tmp_path / "mon.toml"
    config.write_text(
        'ids = [777]\nunzip = true\n[source]\nhost = "imap.example.com"\n'
        'user = "u"\npassword_env = "IMAP_PASSWORD"\n[deliver]\nto = "out"\n'
        '[csv]\ncol_sep = ";"\ncolumns = ["id", "name", "email"]\n'
        'rename = { "ITRP ID" = "id" }\nmissing = "empty"\nstrip_formula_guard = true\n'
    )
    config.chmod(0o600)
    dialect = Dialect.from_config(load_monitor(config).csv)
    assert dialect.columns == ("id", "name", "email") and dialect.missing == "empty"
    data = "Remarks,name,ITRP ID\r\nx,'=cmd,7\r\n"
    assert rewritten(tmp_path, data, dialect) == b"id;name;email\r\n7;=cmd;\r\n"
    config.write_text(config.read_text().replace('missing = "empty"', 'missing = "maybe"'))
    with pytest.raises(ConfigError, match=r"csv\.missing: must be one of 'error', 'empty'"):
        load_monitor(config)


def test_cli_columns_rename_missing_and_formula_guard(tmp_path):
    source = write(tmp_path / "x.csv", 'extra,"Name, full",id\n1,\t@a,7\n2,b\n')
    result = run_cli(
        *("rewrite-csv", "--columns", 'id,"Name, full"', "--columns", "email"),
        *("--rename", "Name, full=name", "--missing", "empty", "--strip-formula-guard", source),
    )
    assert result.code == 0, result.stderr
    assert source.read_text() == "id,name,email\n7,@a,\n,b,\n"
    source = write(tmp_path / "y.csv", "a,b\n1,2\n")
    result = run_cli("rewrite-csv", "--columns", "a,c", source)
    assert result.code == 1
    assert f"{source}: line 1: column 'c' is not in the header" in result.stderr
    assert source.read_text() == "a,b\n1,2\n"
    assert run_cli("rewrite-csv", "--rename", "nothing", source).code == 2
    assert run_cli("rewrite-csv", "--missing", "maybe", source).code == 2
