"""`exportmon generate`: a valid 0600 config rendered from the schema, with provider
defaults (OAuth2 for Microsoft and Google); a password never shown, never from a URL."""

from __future__ import annotations

import dataclasses
import json
import re
import stat
import textwrap
from pathlib import Path

import pytest

from cli import run_cli
from exportmon.config.load import load_monitor
from exportmon.config.reference import layout, scalar_options
from exportmon.config.schema import DeliverConfig, DestinationConfig, MonitorConfig, toml_name


def test_generate_gmail_writes_private_valid_config_and_hides_password(exportmon_home):
    password = "Zq9-unique-Pass"  # a Gmail app password
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
    assert config.source.password == password and config.source.auth == "password"
    assert password not in result.output
    for log_file in exportmon_home.rglob("*.log"):
        assert password not in log_file.read_text()


def _sections(text: str) -> dict[str, str]:
    """The generated text cut at its table headers (commented or not)."""
    found: dict[str, str] = {"": ""}
    current = ""
    for line in text.splitlines():
        header = re.fullmatch(r"(?:# )?(\[\[?[a-z_.0-9<>]+\]\]?)", line)
        if header:
            current = header.group(1).strip("[]")
            current = "exports.<id>" if current.startswith("exports.") else current
            found.setdefault(current, "")
            continue
        found[current] += line + "\n"
    return found


def test_every_option_appears_under_its_doc_and_the_file_loads_back_to_the_defaults(
    exportmon_home,
):
    result = run_cli("generate", "777", "ops@example.org", "--password-env", "IMAP_PW")
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "777.toml"
    text = path.read_text()
    sections = _sections(text)
    for table in layout():
        if table.cls is DeliverConfig:
            continue  # the older table; [[deliver]] replaces it
        body = sections[table.name]
        for f in scalar_options(table):
            key = toml_name(f)
            match = re.search(rf"^(# )?{re.escape(key)} = ", body, re.MULTILINE)
            assert match, f"{table.header or 'top level'} {key} is missing"
            doc_line = textwrap.wrap(
                f.metadata["doc"].replace("`", ""), 78, break_on_hyphens=False
            )[0]
            assert doc_line in body, f"the doc of {key} is missing"
    # Loaded back, everything not written out is the schema's default.
    config = load_monitor(path)
    defaults = MonitorConfig()
    written = {
        "source": {"kind", "host", "port", "security", "user", "password_env"},
        "": {"ids", "name", "path", "root", "source", "deliver_list"},
    }
    for f in dataclasses.fields(MonitorConfig):
        if f.name in written[""]:
            continue
        assert getattr(config, f.name) == getattr(defaults, f.name), f.name
    for f in dataclasses.fields(config.source):
        if f.name not in written["source"]:
            assert getattr(config.source, f.name) == getattr(defaults.source, f.name), f.name
    (destination,) = config.destinations
    assert destination.url == str(exportmon_home / "delivered" / "777")
    unset = DestinationConfig(key="x", known_hosts=str(Path("~/.ssh/known_hosts").expanduser()))
    assert dataclasses.replace(destination, url="", key="x") == unset


def test_generated_lines_fit_80_columns_in_one_quote_style(exportmon_home):
    for address in ("a@example.org", "b@outlook.com", "c@gmail.com"):
        run_cli("generate", "9", address, "--password-env", "P", "--to", "/srv/in", "--force")
        text = (exportmon_home / "monitors" / "9.toml").read_text()
        long = [line for line in text.splitlines() if len(line) > 80]
        assert long == [], long
        assert not re.search(r"= '", text), "one quote style: basic strings only"


def test_ftp_url_is_taken_apart_and_its_password_never_written(exportmon_home):
    result = run_cli(
        "generate",
        "783",
        "x@acme.example",
        "--password-env",
        "P",
        "--ftp",
        "ftps://bob:s3cret@ftp.acme.example:2121/in/exports",
    )
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "783.toml"
    text = path.read_text()
    assert "s3cret" not in text and "s3cret" not in result.output
    assert "the password in --ftp was not written" in result.stderr
    assert "password_env" in result.stderr
    config = load_monitor(path)
    ftp = config.destinations[1]
    assert ftp.url == "ftps://ftp.acme.example:2121/in/exports"
    assert (ftp.user, ftp.password, ftp.password_env) == ("bob", None, "EXPORTMON_FTP_PASSWORD")


def test_url_destinations_of_every_kind_with_no_password_written(exportmon_home):
    result = run_cli(
        "generate", "784", "x@acme.example", "--password-env", "P",
        "--url", "sftp://bob:s3cret@sftp.acme.example:2222/in",
        "--url", "https://learn.acme.example/endpoint/person/store",
        "--url", "https://carol:t0ken@api.acme.example/upload",
    )  # fmt: skip
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "784.toml"
    text = path.read_text()
    for secret in ("s3cret", "t0ken"):
        assert secret not in text and secret not in result.output
    assert result.stderr.count("was not written") == 2
    config = load_monitor(path)
    sftp, learn, api = config.destinations[1:]
    assert (sftp.url, sftp.user, sftp.password_env) == (
        "sftp://sftp.acme.example:2222/in",
        "bob",
        "EXPORTMON_SFTP_PASSWORD",
    )
    assert (learn.url, learn.user, learn.password_env) == (
        "https://learn.acme.example/endpoint/person/store",
        None,
        None,
    )
    assert (api.user, api.password_env) == ("carol", "EXPORTMON_HTTPS_PASSWORD")


def test_an_sftp_url_with_a_key(exportmon_home, tmp_path):
    key = tmp_path / "id_ed25519"
    result = run_cli(
        "generate", "785", "x@acme.example", "--password-env", "P",
        "--url", "sftp://bob@sftp.acme.example/in", "--ssh-key", key,
    )  # fmt: skip
    assert result.code == 0, result.output
    sftp = load_monitor(exportmon_home / "monitors" / "785.toml").destinations[1]
    assert (sftp.user, sftp.ssh_key, sftp.password_env) == ("bob", str(key), None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "sftp://sftp.acme.example/in"], "no user to log in as"),
        (["--url", "http://h/in"], "--url takes a server address"),
        (["--url", "/srv/in"], "--url takes a server address"),
        (["--ssh-key", "k"], "--ssh-key needs an sftp:// --url"),
        (["--url", "sftp://u@h/a/../b"], "must not contain '..'"),
        (["--url", "sftp://bob:s3cret@"], "not a sftp:// address"),
    ],
)
def test_a_bad_url_writes_nothing(exportmon_home, args, message):
    result = run_cli("generate", "5", "a@example.org", "--password-env", "P", *args)
    assert result.code == 2 and message in result.stderr, result.output
    assert "s3cret" not in result.output  # even a URL refused never shows its password
    assert not (exportmon_home / "monitors" / "5.toml").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sftp://host/in", "--ftp takes a server address (ftp://, ftps://)"),
        ("ftp://host:99999/in", "not a port number"),
        ("ftp://host/a/../b", "must not contain '..'"),
    ],
)
def test_a_bad_ftp_url_writes_nothing(exportmon_home, url, message):
    result = run_cli("generate", "5", "a@example.org", "--password-env", "P", "--ftp", url)
    assert result.code == 2 and message in result.stderr, result.output
    assert not (exportmon_home / "monitors" / "5.toml").exists()


def test_a_config_that_would_not_load_is_never_written(exportmon_home):
    inside_state = exportmon_home / "state" / "5" / "downloads"
    result = run_cli("generate", "5", "a@example.org", "--password-env", "P", "--to", inside_state)
    assert result.code == 2
    assert "inside exportmon's own part of the state folder" in result.stderr
    assert "nothing was written" in result.stderr
    assert not (exportmon_home / "monitors" / "5.toml").exists()


@pytest.mark.parametrize(
    ("address", "provider", "flow", "page"),
    [
        ("ops@outlook.com", "microsoft", "device", "docs/signin-microsoft.md"),
        ("ops@hotmail.com", "microsoft", "device", "docs/signin-microsoft.md"),
        ("ops@live.com", "microsoft", "device", "docs/signin-microsoft.md"),
        ("ops@contoso.onmicrosoft.com", "microsoft", "device", "docs/signin-microsoft.md"),
        ("ops@gmail.com", "google", "browser", "docs/signin-google.md"),
    ],
)
def test_microsoft_and_google_get_oauth2_settings_and_no_password(
    exportmon_home, address, provider, flow, page
):
    result = run_cli("generate", "5", address)
    assert result.code == 0, result.output
    path = exportmon_home / "monitors" / "5.toml"
    text = path.read_text()
    config = load_monitor(path)
    source = config.source
    assert (source.auth, source.oauth_provider, source.oauth_flow) == ("oauth2", provider, flow)
    assert source.oauth_client_id == "" and 'oauth_client_id = ""' in text
    source_text = _sections(text)["source"]
    assert not re.search(r"^(# )?password\w* = ", source_text, re.MULTILINE), "no password line"
    assert page in text and "login" in text
    assert f"exportmon -c {path} login" in result.stderr


def test_microsoft_never_stores_a_password(exportmon_home):
    result = run_cli("generate", "5", "ops@outlook.com", "--password-env", "IMAP_PW")
    assert result.code == 0, result.output
    config = load_monitor(exportmon_home / "monitors" / "5.toml")
    assert config.source.auth == "oauth2" and config.source.password_env is None
    assert "turned off password logins" in result.stderr


@pytest.mark.parametrize(
    ("address", "host", "archive"),
    [
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


def test_the_hint_without_a_config_never_suggests_a_password_on_the_command_line(
    exportmon_home,
):
    result = run_cli("status")
    assert result.code == 2
    assert "exportmon generate" in result.stderr
    assert "<password>" not in result.stderr.lower()


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
