"""Loading and validating monitor configs: every problem is one clear line naming file and key."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cli import run_cli
from exportmon.config.load import load_monitor, load_monitors
from exportmon.errors import ConfigError

VALID = """\
ids = [777]
[source]
host = "imap.example.com"
user = "exports@example.com"
password_env = "IMAP_PASSWORD"
[deliver]
to = "delivered"
"""


def write(tmp_path: Path, text: str, name: str = "mon.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    os.chmod(path, mode)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_monitor(write(tmp_path, text))
    return info.value.one_line()


def test_valid_config_loads_with_defaults_and_resolved_paths(tmp_path, exportmon_home):
    config = load_monitor(write(tmp_path, VALID))
    assert config.name == "mon"
    assert config.ids == [777]
    assert config.source.kind == "imap" and config.source.default_port() == 993
    assert config.source.search == 'FROM ITRP HEADER X-ITRP-ExportID ""'
    # Gmail's "All Mail" only for Gmail; other IMAP servers get "Archive".
    assert config.source.archive == "Archive"
    assert config.unzip is True and config.sub_dirs is False and config.exit_when_idle == 0
    assert config.csv is None
    assert config.deliver.to == str(tmp_path / "delivered")
    assert config.root == str(exportmon_home / "state" / "mon")
    assert config.dirs.ledger == exportmon_home / "state" / "mon" / "ledger.sqlite"


def test_every_gem_option_has_a_home(tmp_path):
    config = load_monitor(
        write(
            tmp_path,
            """\
        ids = [777, 779]
        root = "/srv/exportmon/777"
        unzip = true
        sub_dirs = true
        exit_when_idle = 5
        [source]
        host = "imap.googlemail.com"
        port = 993
        security = "ssl"
        user = "test.my.export@gmail.com"
        password = "easy_to_gu3ss"
        mailbox = "INBOX"
        archive = "[Gmail]/All Mail"
        search = 'FROM ITRP HEADER X-ITRP-ExportID ""'
        [csv]
        row_sep = "##\\n"
        col_sep = "|"
        quote_char = ":"
        value_hook = "hooks:clean"
        [deliver]
        to = "/tmp/exports"
        ftp_url = "ftp://ftp.mycompany.com"
        ftp_dir = "my/exports"
        ftp_user = "user"
        ftp_password = "secret"
        [alerts]
        command = "/usr/local/bin/alert"
        """,
        )
    )
    assert config.ids == [777, 779] and config.sub_dirs and config.exit_when_idle == 5
    assert config.csv is not None and config.csv.row_sep == "##\n" and config.csv.quote_char == ":"
    assert config.deliver.ftp_dir == "my/exports"
    assert config.alerts.command == "/usr/local/bin/alert"


def test_units_are_parsed(tmp_path):
    config = load_monitor(
        write(
            tmp_path,
            VALID
            + """
[download]
max_bytes = "2GiB"
timeout = "2m"
[exports.777]
expect_every = "1d"
grace = "2h"
min_rows = { people = 100 }
""",
        )
    )
    assert config.download.max_bytes == 2 * 1024**3
    assert config.download.timeout == 120
    assert config.exports[777].grace == 7200
    assert config.exports[777].min_rows == {"people": 100}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "unzipp = true\n", "unknown option"),
        ("imap_address = 'x'\n" + VALID, "the gem's 'imap_address' is source.host in exportmon"),
        (
            VALID.replace("[deliver]", "[deliver]\novewrite = 'keep'"),
            "deliver.ovewrite: unknown option (did you mean 'deliver.overwrite'?)",
        ),
        (VALID.replace("ids = [777]", "ids = 777"), "ids: expected a list, got 777"),
        (VALID.replace("ids = [777]", "ids = ['x']"), "ids[0]: expected an integer, got 'x'"),
        (VALID.replace("ids = [777]", "ids = []"), "ids: at least one export id is required"),
        ("unzip = 'yes'\n" + VALID, "unzip: expected true or false, got 'yes'"),
        (
            VALID.replace('host = "imap.example.com"', 'host = "h"\nport = "993"'),
            "source.port: expected an integer, got '993'",
        ),
        (
            VALID.replace('host = "imap.example.com"', 'host = "h"\nsecurity = "tls"'),
            "source.security: must be one of 'ssl', 'starttls', 'plain', got 'tls'",
        ),
        (
            VALID + "[csv]\nquote_char = '::'\n",
            "csv.quote_char: must be exactly one character, got '::'",
        ),
        (
            VALID.replace('password_env = "IMAP_PASSWORD"\n', ""),
            "source.password: missing password",
        ),
        (
            VALID.replace('password_env = "IMAP_PASSWORD"', 'password_env = "A"\npassword = "b"'),
            "source: set only one of password, password_env",
        ),
        (
            "unzip = false\n" + VALID + "[csv]\ncol_sep = '|'\n",
            "csv: CSV rewriting needs unzip = true",
        ),
        (VALID + "ftp_url = 'sftp://host'\n", "deliver.ftp_url: not an ftp:// or ftps:// server"),
        (
            VALID + "ftp_url = 'ftp://host'\nftp_user = 'u'\n",
            "deliver.ftp_password: missing password",
        ),
        (VALID + "[alerts]\nsmtp_url = 'smtp://mail'\n", "alerts.to: smtp_url is set but nobody"),
        (VALID + "[exports.778]\n", "exports.778: export id is not in ids"),
        (VALID + "[exports.777]\nexpect_every = 'daily'\n", "is neither a duration"),
        (VALID + "[download]\nmax_bytes = 'lots'\n", "download.max_bytes: 'lots' is not a size"),
        (VALID + "[csv]\nencoding = 'utf-9'\n", "csv.encoding: unknown encoding 'utf-9'"),
        (
            VALID + "[csv]\nvalue_hook = 'no colon'\n",
            "csv.value_hook: must look like module:function",
        ),
        (
            VALID + "[[recognizers]]\nname = 'x'\nsubject_pattern = '('\n",
            "recognizers[0].subject_pattern: invalid regular expression",
        ),
        (
            VALID.replace("[source]", "[source]\nca_file = 'missing.pem'"),
            "source.ca_file: file not found",
        ),
        ("ids = [1]\n[source]\nkind = 'maildir'\n", "source.path: kind = 'maildir' needs the path"),
        ("ids = [1\n", "invalid TOML"),
    ],
)
def test_broken_config_is_one_line_naming_file_and_key(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert str(tmp_path / "mon.toml") in message
    assert expected in message
    assert "\n" not in message


def test_world_readable_secret_warns_and_strict_refuses(tmp_path, caplog):
    text = VALID.replace('password_env = "IMAP_PASSWORD"', 'password = "hunter22"')
    path = write(tmp_path, text, mode=0o644)
    with caplog.at_level("WARNING"):
        load_monitor(path)
    assert "readable by others" in caplog.text and "chmod 600" in caplog.text
    with pytest.raises(ConfigError, match="readable by others"):
        load_monitor(path, strict=True)
    os.chmod(path, 0o600)
    load_monitor(path, strict=True)


def test_a_broken_config_does_not_stop_the_others(tmp_path):
    write(tmp_path, VALID, "good.toml")
    write(tmp_path, "bogus = 1\n" + VALID, "bad.toml")
    monitors, errors = load_monitors([tmp_path])
    assert [m.name for m in monitors] == ["good"]
    assert len(errors) == 1 and "bad.toml: bogus: unknown option" in errors[0].one_line()


def test_cli_reports_broken_config_in_one_line_with_exit_2(tmp_path):
    path = write(tmp_path, VALID.replace('password_env = "IMAP_PASSWORD"\n', ""))
    result = run_cli("-c", path, "generate", "--list")
    assert result.code == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error_lines == [
        f"exportmon: error: {path}: source.password: missing password (set password_env or "
        "password_command to keep it out of this file, or password)"
    ]


def test_missing_config_file_is_a_usage_error(tmp_path):
    result = run_cli("-c", tmp_path / "nope.toml", "generate", "--list")
    assert result.code == 2
    assert f"{tmp_path / 'nope.toml'}: config file not found" in result.stderr


def test_no_monitors_configured_says_how_to_create_one():
    with pytest.raises(ConfigError) as info:
        load_monitors(None)
    assert "no monitors configured" in info.value.one_line()
    assert "exportmon generate" in info.value.one_line()
