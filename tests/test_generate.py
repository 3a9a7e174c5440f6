"""`exportmon generate`: a valid 0600 config with provider defaults; the password never shown."""

from __future__ import annotations

import json
import stat

import pytest

from cli import run_cli
from exportmon.config.load import load_monitor


def test_generate_gmail_writes_private_valid_config_and_hides_password(exportmon_home):
    password = "Zq9-unique-Pass"
    result = run_cli("generate", "777", "user@gmail.com", password)
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "777.toml"
    assert result.stdout.strip() == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_monitor(path, strict=True)
    assert config.ids == [777]
    assert (config.source.host, config.source.port, config.source.security) == (
        "imap.gmail.com",
        993,
        "ssl",
    )
    assert config.source.archive == "[Gmail]/All Mail"
    assert config.source.password == password
    assert password not in result.output
    for log_file in exportmon_home.rglob("*.log"):
        assert password not in log_file.read_text()
    text = path.read_text()
    # Every other option is there as a commented example.
    for option in (
        "password_command",
        "token_command",
        "allowed_senders",
        "max_bytes",
        "max_ratio",
        "row_sep",
        "quoting",
        "value_hook",
        "url",
        "overwrite",
        "archive",
        "trigger",
        "manifest",
        "temp_suffix",
        "smtp_url",
        "repeat_after",
        "expect_every",
        "keep_downloads",
    ):
        assert f"# {option}" in text or f"\n{option}" in text, option


@pytest.mark.parametrize(
    ("address", "host", "archive"),
    [
        ("ops@outlook.com", "outlook.office365.com", "Archive"),
        ("ops@yahoo.com", "imap.mail.yahoo.com", "Archive"),
        ("ops@icloud.com", "imap.mail.me.com", "Archive"),
        ("ops@fastmail.com", "imap.fastmail.com", "Archive"),
        ("ops@example.org", "imap.example.org", "Archive"),
    ],
)
def test_provider_defaults(exportmon_home, address, host, archive):
    result = run_cli("generate", "5", address, "--password-env", "IMAP_PW")
    assert result.code == 0, result.output
    config = load_monitor(exportmon_home / "monitors" / "5.toml")
    assert (config.source.host, config.source.archive) == (host, archive)
    assert config.source.password is None and config.source.password_env == "IMAP_PW"
    if address.endswith("example.org"):
        assert "is a guess" in result.stderr


def test_password_from_stdin_and_refusal_to_overwrite(exportmon_home):
    result = run_cli(
        "generate",
        "777",
        "a@example.com",
        "-",
        "--to",
        "/srv/in",
        "--ftp",
        "ftps://ftp.example.com:2121",
        "--name",
        "people",
        input="StdinPw-77\n",
    )
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "people.toml"
    config = load_monitor(path)
    assert config.source.password == "StdinPw-77"
    assert [d.url for d in config.destinations] == ["/srv/in", "ftps://ftp.example.com:2121"]
    again = run_cli(
        "generate", "777", "a@example.com", "--password-command", "pass show x", "--name", "people"
    )
    assert again.code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    forced = run_cli(
        "generate",
        "777",
        "a@example.com",
        "--password-command",
        "pass show x",
        "--name",
        "people",
        "--force",
    )
    assert forced.code == 0
    assert load_monitor(path).source.password_command == "pass show x"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "777"], "give an export id and an email address"),
        (["generate", "0", "a@b.c", "x"], "export id must be a positive number"),
        (["generate", "7", "not-an-address", "x"], "is not an email address"),
        (["generate", "7", "a@b.c"], "no password given"),
        (["generate", "7", "a@b.c", "x", "--password-env", "Y"], "give the password one way only"),
    ],
)
def test_bad_generate_arguments(args, message):
    result = run_cli(*args)
    assert result.code == 2
    assert message in result.stderr


def test_list_shows_configured_monitors(exportmon_home):
    run_cli("generate", "777", "a@gmail.com", "--password-env", "P")
    run_cli("generate", "778", "b@example.com", "--password-env", "P", "--name", "other")
    result = run_cli("generate", "--list", "--json")
    assert result.code == 0
    entries = json.loads(result.stdout)
    assert [(e["name"], e["ids"]) for e in entries] == [("777", [777]), ("other", [778])]
    table = run_cli("generate", "--list")
    assert "777" in table.stdout and "other" in table.stdout
