"""Property-based tests (hypothesis): link extraction, file names, path joining and CSV
rewrite round trips with both engines.

Each property runs a bounded number of examples (``max_examples``) so CI stays quick;
``HYPOTHESIS_PROFILE=thorough`` runs ten times as many.
"""

from __future__ import annotations

import csv
import io
import os
import string
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exportmon.deliver.ftp import FtpDestination
from exportmon.deliver.local import LocalDestination
from exportmon.errors import DeliveryError
from exportmon.files import csv_fast
from exportmon.files.csv_rewrite import Dialect, rewrite_csv
from exportmon.files.names import (
    MAX_NAME_BYTES,
    UnsafeName,
    entry_target,
    name_from_link,
    relative_target,
    safe_file_name,
)
from exportmon.mail.message import first_link, html_link

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
EXAMPLES = PROFILE.max_examples

# --- link extraction --------------------------------------------------------------------

URL_CHARS = string.ascii_letters + string.digits + "-._~%/=&+"
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){1,3}", fullmatch=True)
paths = st.text(URL_CHARS, max_size=60).map(lambda p: "/" + p)
queries = st.one_of(st.just(""), st.text(URL_CHARS + "?", min_size=1, max_size=40).map("?".__add__))


@st.composite
def links(draw) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTPS"]))
    link = f"{scheme}://{draw(hosts)}{draw(paths)}{draw(queries)}"
    # What the extractor trims off is punctuation ending a sentence, not the link.
    assume(link[-1] not in ".,;:!?")
    return link


prose = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80).filter(
    lambda t: "http" not in t.lower()
)


@settings(PROFILE)
@given(links(), prose, prose, st.sampled_from(["", ".", ",", ")", "!", ";", "?"]))
def test_the_link_in_any_text_is_found_whole(link, before, after, punctuation):
    text = f"{before} {link}{punctuation}\n{after}"
    assert first_link(text) == link


@settings(PROFILE)
@given(links(), prose)
def test_the_link_of_an_html_anchor_is_found_whole(link, label):
    escaped = link.replace("&", "&amp;")
    label = label.replace("<", "").replace("&", "")
    html = f'<p>{label}</p><a href="{escaped}">{label or "download"}</a>'
    assert html_link(html) == link


@settings(PROFILE)
@given(st.text(max_size=300))
def test_link_extraction_never_raises_and_returns_only_web_links(text):
    for found in (first_link(text), html_link(text)):
        assert found is None or found.lower().startswith(("http://", "https://"))


# --- file names --------------------------------------------------------------------------


def assert_safe_name(name: str) -> None:
    assert name and name not in (".", "..")
    assert not name.startswith(".")
    assert not set("/\\\x00") & set(name)
    assert name == name.strip()
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


names = st.text(max_size=300)
hostile_names = st.lists(
    st.sampled_from(["..", ".", "/", "\\", "\x00", "a", "é", " ", ".csv", "%2e", "%2f", "C:"]),
    max_size=25,
).map("".join)


@settings(PROFILE)
@given(st.one_of(names, hostile_names))
def test_safe_file_name_is_one_visible_component(name):
    try:
        safe = safe_file_name(name)
    except UnsafeName:
        return
    assert_safe_name(safe)
    assert safe_file_name(safe) == safe, "making a safe name safe changes nothing"


@settings(PROFILE)
@given(st.one_of(names, hostile_names), st.sampled_from([".csv", ".zip", ".CSV", ""]))
def test_name_from_link_is_safe_and_keeps_the_suffix(segment, suffix):
    from urllib.parse import quote

    link = f"https://x.example/exports/{quote(segment + suffix, safe='')}?sig=1"
    name = name_from_link(link)
    if name is None:
        return
    assert_safe_name(name)
    assert name.lower().endswith((".csv", ".zip"))


@settings(PROFILE)
@given(st.one_of(names, hostile_names), st.booleans())
def test_relative_target_stays_in_the_folder(name, sub_dirs):
    try:
        target = relative_target(name, sub_dirs=sub_dirs)
    except UnsafeName:
        return
    parts = target.split("/")
    assert 1 <= len(parts) <= 2
    for part in parts:
        assert_safe_name(part)


@settings(PROFILE)
@given(st.lists(st.one_of(names, hostile_names), min_size=1, max_size=4).map("/".join))
def test_archive_entries_never_leave_the_extraction_folder(entry):
    try:
        target = entry_target(entry, sub_dirs=True)
    except UnsafeName:
        return
    for part in target.split("/"):
        assert_safe_name(part)
    root = Path("/srv/extract")
    assert (root / target).resolve().is_relative_to(root)


# --- path joining at the destinations ---------------------------------------------------


@pytest.fixture(scope="module")
def destination_folder():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@settings(PROFILE)
@given(st.lists(st.one_of(names, hostile_names), min_size=1, max_size=4).map("/".join))
def test_local_destination_paths_never_leave_the_folder(destination_folder, target):
    destination = LocalDestination(destination_folder)
    try:
        path = destination.path(target)
    except DeliveryError:
        return
    assert path.resolve().is_relative_to(destination_folder.resolve())
    assert path != destination_folder.resolve()


@settings(PROFILE)
@given(
    st.sampled_from(["", ".", "in/exports", "/abs/dir"]),
    st.lists(st.one_of(names, hostile_names), min_size=1, max_size=4).map("/".join),
)
def test_ftp_paths_never_leave_the_folder(directory, target):
    ftp = FtpDestination.__new__(FtpDestination)
    ftp.directory = directory
    try:
        path = ftp.remote_path(target)
    except DeliveryError:
        return
    parts = PurePosixPath(path).parts
    assert ".." not in parts and path.strip("/")
    if directory not in ("", "."):
        assert path.startswith(directory.rstrip("/") + "/")


# --- CSV round trips ---------------------------------------------------------------------

values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
numbers = st.integers(-(10**6), 10**6).map(str)
records = st.lists(
    st.lists(
        st.one_of(values, numbers, st.sampled_from(["", '"', ",", ";", "\n", "\r\n"])),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=12,
)
dialects = st.builds(
    Dialect,
    row_sep=st.sampled_from(["\n", "\r\n", None]),
    col_sep=st.sampled_from([",", ";", "|", "\t"]),
    quote_char=st.sampled_from(['"', "'", ":"]),
    quoting=st.sampled_from(["minimal", "all", "nonnumeric", "gem"]),
)


@contextmanager
def engine(name: str):
    """Rewrites use the compiled engine (``fast``) or the reference engines."""
    saved = os.environ.get(csv_fast.ENGINE_VARIABLE)
    os.environ[csv_fast.ENGINE_VARIABLE] = "python" if name == "reference" else "c"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[csv_fast.ENGINE_VARIABLE]
        else:
            os.environ[csv_fast.ENGINE_VARIABLE] = saved


def read_back(data: bytes, dialect: Dialect, row_sep: str) -> list[list[str]]:
    text = data.decode("utf-8")
    assert text.endswith(row_sep)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=dialect.col_sep,
        quotechar=dialect.quote_char,
        doublequote=True,
        strict=True,
    )
    return list(reader)


def expected_after_reading(rows: list[list[str]]) -> list[list[str]]:
    # A record of one empty value is written as two quote characters, read back as [""].
    return [row if row != [] else [""] for row in rows]


@pytest.mark.parametrize("which", ["fast", "reference"])
@settings(PROFILE)
@given(rows=records, dialect=dialects)
def test_rewritten_csv_reads_back_to_the_same_values(tmp_path_factory, which, rows, dialect):
    folder = tmp_path_factory.mktemp("roundtrip")
    source = folder / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)
    expected = list(csv.reader(io.StringIO(source.read_bytes().decode("utf-8"), newline="")))
    assume(expected)
    target = folder / "out.csv"
    with engine(which):
        result = rewrite_csv(source, target, dialect)
    assert result.records == len(expected)
    assert read_back(target.read_bytes(), dialect, result.row_sep) == expected_after_reading(
        expected
    )
