"""Masking secrets: every form of URL userinfo and credential position is masked, registered
secrets are masked as whole tokens, and ordinary words are never eaten (property tests)."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exportmon import redact
from exportmon.errors import DownloadError
from exportmon.redact import MASK, masked_in_free_text, register


@pytest.fixture(autouse=True)
def clean_registry():
    redact.forget_all()
    yield
    redact.forget_all()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://:secret@host/x", "https://:***@host/x"),
        ("https://user:secret@host/x", "https://user:***@host/x"),
        ("https://user:@host/x", "https://user:@host/x"),
        ("https://user:p%40ss%3Aw@host/x", "https://user:***@host/x"),
        ("https://ghp_token123@github.example/x", "https://***@github.example/x"),
        ("https://me@corp.example:pw@host/x", "https://me@corp.example:***@host/x"),
        ("ftp://bob:pa55w0rd@host/x", "ftp://bob:***@host/x"),
        ("imaps://someone@imap.example.com:993", "imaps://someone@imap.example.com:993"),
        ("'https://:s3cret@h.example/a.csv' failed", "'https://:***@h.example/a.csv' failed"),
        ("go?next=https%3A%2F%2Fu%3Asecret%40h%2Fx", "go?next=https%3A%2F%2Fu%3A***%40h%2Fx"),
        ("https://h/f.csv?token=abc123&x=1", "https://h/f.csv?token=***&x=1"),
        (
            "https://h/f?X-Amz-Signature=ab12&X-Amz-Date=1",
            "https://h/f?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        (
            "https://h/f?sv=2020&se=2030-01-01T00%3A00Z&sig=a%2Bb",
            "https://h/f?sv=2020&se=2030-01-01T00%3A00Z&sig=***",
        ),
        ("grant_type=password&password=hunter2&user=x", "grant_type=password&password=***&user=x"),
        (
            '{"access_token": "eyJ.x.y", "expires_in": 3600}',
            '{"access_token": "***", "expires_in": 3600}',
        ),
        ('ftp_password = "pa ss"', 'ftp_password = "***"'),
        ("Authorization: Bearer eyJhbGciOi", "Authorization: Bearer ***"),
        ("Authorization: Basic Ym9iOnB3", "Authorization: Basic ***"),
        ("> b'ABCD1 LOGIN user1 \"IMAP\"'", "> b'ABCD1 LOGIN user1 ***'"),
        ("PASS wrong", "PASS ***"),
        ("AUTH PLAIN AGJvYgBwYXNz", "AUTH PLAIN ***"),
    ],
)
def test_credentials_are_masked_by_position(text, shown):
    assert redact.redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "token expired; ask the sender to re-run the export",
        "the key=value pair",
        "login failed for bob: check source.user and the password",
        "basic settings are fine",
        "Bearer token",
        '{"key": "777/tok-1", "state": "new"}',
        "mailto:ops@example.com and ops@example.com",
        "https://host/path?email=a@b.example",
        "exit code=2",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact.redact(text) == text


def test_short_or_word_like_passwords_do_not_eat_words():
    register("wrong")
    register("IMAP")
    line = "[wrongpw] IMAP server 127.0.0.1:993 refused the login: wrong password"
    assert redact.redact(line) == line
    # ...but where such a password actually leaks, it is masked by position.
    assert redact.redact("https://bob:wrong@h/x") == "https://bob:***@h/x"
    assert redact.redact("> b'A1 LOGIN bob IMAP'") == "> b'A1 LOGIN bob ***'"


def test_a_distinctive_password_is_masked_as_a_whole_token_only():
    register("Hunter-2-Password")
    assert redact.redact("login failed for Hunter-2-Password.") == "login failed for ***."
    assert redact.redact("[Hunter-2-Password] x") == "[***] x"
    assert redact.redact("xHunter-2-Password2") == "xHunter-2-Password2"


def test_percent_encoded_forms_of_a_registered_secret_are_masked():
    register("p@ss w0rd!")
    assert redact.redact("GET /login?p=p%40ss%20w0rd%21 and p%40ss+w0rd%21") == (
        "GET /login?p=*** and ***"
    )


def test_error_lines_are_masked_wherever_they_go():
    error = DownloadError("cannot download https://:secret@h.example/x.csv", hint="token=abc")
    assert error.one_line() == "cannot download https://:***@h.example/x.csv (token=***)"


@pytest.mark.parametrize(
    ("secret", "distinctive"),
    [
        ("wrong", False),
        ("IMAP", False),
        ("summertime", False),
        ("hunter22", True),
        ("pa55w0rd", True),
        ("correcthorsebatterystaple", True),
        ("abc1", False),
    ],
)
def test_which_secrets_are_masked_in_free_text(secret, distinctive):
    assert masked_in_free_text(secret) is distinctive


# --- properties -------------------------------------------------------------------------------

WORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
#: Prose without URL, parameter or field structure: words, spaces and plain punctuation.
PROSE = st.lists(
    st.one_of(WORD, st.sampled_from([" ", ", ", ". ", " (", ") ", " - ", "[", "] "])),
    max_size=30,
).map("".join)
SECRET = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%^*()-_+.,~", min_size=4, max_size=30
)
USERINFO_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=%"


def _whole_token(text: str, secret: str) -> bool:
    start = text.find(secret)
    while start != -1:
        before = text[start - 1] if start else " "
        end = start + len(secret)
        after = text[end] if end < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(secret, start + 1)
    return False


@settings(max_examples=150, deadline=None)
@given(text=PROSE, secret=SECRET)
def test_masking_never_changes_text_that_does_not_hold_the_secret(text, secret):
    assume(not _whole_token(text, secret))
    redact.forget_all()
    register(secret)
    assert redact.redact(text) == text


@settings(max_examples=150, deadline=None)
@given(before=PROSE, after=PROSE, secret=SECRET)
def test_a_distinctive_secret_never_survives_as_a_token(before, after, secret):
    assume(masked_in_free_text(secret))
    assume(secret not in before and secret not in after)
    redact.forget_all()
    register(secret)
    shown = redact.redact(f"{before} {secret} {after}")
    assert secret not in shown and MASK in shown


@settings(max_examples=150, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "ftp", "ftps", "sftp", "imaps"]),
    user=st.text(alphabet=USERINFO_CHARS.replace(":", ""), max_size=10),
    password=st.text(alphabet=USERINFO_CHARS + ":", min_size=1, max_size=20),
    text=PROSE,
)
def test_a_url_password_is_masked_in_any_text(scheme, user, password, text):
    url = f"{scheme}://{user}:{password}@files.example.com/a/b.csv"
    shown = redact.redact(f"{text} {url} {text}")
    assert f"{scheme}://{user}:{MASK}@files.example.com/a/b.csv" in shown
    assert f":{password}@" not in shown
