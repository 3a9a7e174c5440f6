"""Identity: no two exports share a path, no two files of a mail share a name, and no
name a sender chooses can be one of exportmon's own bookkeeping names.

Property tests (hypothesis) for the path and name rules, and the mail-level cases.
"""

from __future__ import annotations

import unicodedata
from email.message import EmailMessage
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from exportmon.atomic import temporary_name
from exportmon.deliver import IN_PROGRESS
from exportmon.files.names import (
    MAX_NAME_BYTES,
    UnsafeName,
    distinct_name,
    name_key,
    safe_file_name,
)
from exportmon.mail.message import find_attachments
from exportmon.paths import HINT_CHARS, download_hint, export_dir

ROOT = Path("/state/downloads")
tokens = st.one_of(st.none(), st.text(min_size=0, max_size=300))
row_ids = st.integers(min_value=1, max_value=2**62)
export_ids = st.one_of(st.none(), st.integers(min_value=0, max_value=10**18))
names = st.text(min_size=1, max_size=300)


@given(row_ids, row_ids, export_ids, tokens, tokens)
def test_distinct_exports_never_share_a_download_folder(a, b, export_id, hint_a, hint_b):
    assume(a != b)
    assert export_dir(ROOT, a, export_id, hint_a) != export_dir(ROOT, b, export_id, hint_b)


@given(row_ids, export_ids, tokens)
def test_a_download_folder_is_one_safe_component_below_the_export_id(row_id, export_id, hint):
    path = export_dir(ROOT, row_id, export_id, hint)
    assert path.parent.parent == ROOT
    assert path.name.split("-", 1)[0] == str(row_id)
    assert path.name.isascii() and "/" not in path.name and not path.name.startswith(".")
    assert len(path.name) <= len(str(row_id)) + 1 + HINT_CHARS


def test_tokens_that_share_a_long_prefix_or_differ_only_in_unsafe_characters():
    long = "x" * 150
    folders = {
        export_dir(ROOT, row, 777, token)
        for row, token in enumerate([long + "a", long + "b", "a/b", "a:b", "a_b"], start=1)
    }
    assert len(folders) == 5


def test_the_hint_is_the_token_else_the_mails_date():
    assert download_hint("0fad4fc0", "2026-11-23T08:40:00.000000Z") == "0fad4fc0"
    assert download_hint(None, "2026-11-23T08:40:00.000000Z") == "20261123-084000"
    assert download_hint(None, None) is None
    assert export_dir(ROOT, 12, 777, "0fad4fc0") == ROOT / "777" / "12-0fad4fc0"
    assert export_dir(ROOT, 12, None, "../../etc") == ROOT / "other" / "12-etc"


@given(names)
def test_a_safe_name_is_never_a_bookkeeping_name(name):
    try:
        safe = safe_file_name(name)
    except UnsafeName:
        return
    assert not safe.startswith(".")  # every temporary name in exportmon's folders does
    assert not safe.casefold().endswith(IN_PROGRESS)
    assert "/" not in safe and "\0" not in safe
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp") for c in safe)


@given(names, names)
def test_a_temporary_name_is_never_a_safe_name(final, other):
    try:
        final_safe, other_safe = safe_file_name(final), safe_file_name(other)
    except UnsafeName:
        return
    for suffix in (".part", ".part.json", ".rewriting", ".partial"):
        assert temporary_name(Path(final_safe), suffix).name != other_safe
    assert temporary_name(Path(final_safe), IN_PROGRESS, hidden=False).name != other_safe


@given(st.lists(names, min_size=1, max_size=8))
def test_distinct_names_are_distinct_after_normalising_and_case_folding(raw):
    taken: set[str] = set()
    out = []
    for name in raw:
        try:
            out.append(distinct_name(safe_file_name(name), taken))
        except UnsafeName:
            continue
    assert len({name_key(n) for n in out}) == len(out)
    assert all(len(n.encode()) <= MAX_NAME_BYTES for n in out)


def mail_with(*attachments: tuple[str, bytes]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Export 777"
    message.set_content("attached")
    for name, content in attachments:
        message.add_attachment(content, maintype="text", subtype="csv", filename=name)
    return message


def test_attachments_that_become_one_name_are_all_kept_under_distinct_names(caplog):
    nfc = unicodedata.normalize("NFC", "café.csv")
    nfd = unicodedata.normalize("NFD", "café.csv")
    long_a, long_b = "a" * 250 + "1.csv", "a" * 250 + "2.csv"
    found = find_attachments(
        mail_with(
            ("a:b.csv", b"1"),
            ("a_b.csv", b"2"),
            (nfc, b"3"),
            (nfd, b"4"),
            ("Big.csv", b"5"),
            ("big.csv", b"6"),
            (long_a, b"7"),
            (long_b, b"8"),
        )
    )
    assert [a.content for a in found] == [b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8"]
    assert len({name_key(a.file_name) for a in found}) == 8
    assert found[1].file_name == "a_b~2.csv"
    assert "saved as a_b~2.csv" in caplog.text


def test_the_same_file_attached_twice_is_kept_once():
    found = find_attachments(mail_with(("a.csv", b"1"), ("a.csv", b"1")))
    assert [(a.file_name, a.content) for a in found] == [("a.csv", b"1")]


def test_format_characters_are_removed_from_file_names():
    assert safe_file_name("invoice\u202ecsv.exe.csv") == "invoicecsv.exe.csv"
    assert safe_file_name("a\u200bb\ufeff.csv") == "ab.csv"
    assert safe_file_name("t\x1b]0;pwned\x07.csv") == "t_]0;pwned_.csv"
    assert safe_file_name("x.csv.in_progress") == "x.csv_in_progress"
