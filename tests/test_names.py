"""File names from links and archives: the gem's rules, and nothing unsafe gets through."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exportmon.files.names import (
    MAX_NAME_BYTES,
    UnsafeName,
    export_type,
    name_from_link,
    relative_target,
    safe_file_name,
)

GEM_LINK = (
    "https://itrp.amazonaws.com/exports/20130911/wdc/20130911-195545-affected_slas.csv"
    "?AWSAccessKeyId=AKIA&Signature=du%2B23ZUsrLng%3D&Expires=1379102146"
)


def test_name_from_the_gem_links():
    assert name_from_link(GEM_LINK) == "20130911-195545-affected_slas.csv"
    assert name_from_link(GEM_LINK.split("?")[0]) == "20130911-195545-affected_slas.csv"
    assert name_from_link("https://x/exports/a.zip/download") == "a.zip"
    assert name_from_link("https://x/exports/download?id=3") is None
    assert name_from_link("https://x/%2e%2e%2fetc%2fpasswd.csv") == "_etc_passwd.csv"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("5-20130923-072312-organizations.csv", "organizations"),
        ("5-20130923-072312-organizations_contact_details.csv", "organizations_contact_details"),
        ("dir/5-1-sites.csv", "sites"),
        ("people.csv", None),
        ("5-1-people.zip", None),
    ],
)
def test_export_type(name, expected):
    assert export_type(name) == expected


def test_relative_target_with_and_without_sub_dirs():
    assert relative_target("5-1-sites.csv", sub_dirs=True) == "sites/5-1-sites.csv"
    assert relative_target("5-1-sites.csv", sub_dirs=False) == "5-1-sites.csv"
    assert relative_target("plain.csv", sub_dirs=True) == "plain.csv"


@pytest.mark.parametrize("name", ["", "..", "...", "/", "\x00", "  "])
def test_names_that_cannot_be_made_safe(name):
    with pytest.raises(UnsafeName):
        safe_file_name(name)


@given(st.text(min_size=1, max_size=400))
def test_safe_file_name_never_escapes_or_hides(name):
    try:
        safe = safe_file_name(name)
    except UnsafeName:
        return
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".")
    assert safe not in ("", ".", "..")
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES


def test_long_names_keep_their_suffix():
    safe = safe_file_name("x" * 500 + ".csv")
    assert safe.endswith(".csv") and len(safe.encode()) <= MAX_NAME_BYTES
