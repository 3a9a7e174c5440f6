"""Loading and validating monitor configs: every problem is one clear line naming file and key."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cli import run_cli
from exportmon.config.load import load_monitor, load_monitors
from exportmon.errors import ConfigError, ConfigProblems

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


def test_every_problem_of_a_file_is_named_at_once(tmp_path):
    text = (
        VALID.replace("ids = [777]", "ids = [777]\nunzipp = true")
        .replace('host = "imap.example.com"', 'host = "imap.example.com"\nsecurity = "tls"')
        .replace('to = "delivered"', 'to = "delivered"\nftp_dir = "../up"')
    ) + "[csv]\nquote_char = '::'\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigProblems) as info:
        load_monitor(path)
    lines = info.value.lines()
    assert len(lines) == 4, lines
    for expected in (
        "unzipp: unknown option",
        "source.security: must be one of",
        "deliver.ftp_url: FTP options are set but ftp_url is missing",
        "csv.quote_char: must be exactly one character",
    ):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
        assert any(line.startswith(f"{path}: {expected}") for line in lines)
    assert "4 problems" in info.value.one_line() and "\n" not in info.value.one_line()
    result = run_cli("-c", path, "generate", "--list")
    assert result.code == 2
    for expected in ("unzipp", "source.security", "deliver.ftp_url", "csv.quote_char"):
        assert f"{expected}: " in result.stderr


def test_three_mistakes_are_all_named_by_the_cli_with_exit_2(tmp_path):
    text = VALID.replace("ids = [777]", "ids = [0]") + "[zip]\nmax_entries = 0\n"
    text += "[csv]\nencoding = 'hex'\n"
    path = write(tmp_path, text)
    result = run_cli("-c", path, "status")
    assert result.code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 3 and all(line.startswith(f"ERROR {path}: ") for line in errors)
    for expected in (
        "ids[0]: export ids are positive numbers",
        "zip.max_entries: must be at least 1",
        "csv.encoding: 'hex' is not a text encoding",
    ):
        assert result.stderr.count(expected) == 1, result.stderr


def test_a_wrong_type_is_not_reported_again_as_its_default(tmp_path):
    # kind falls back to its default (imap) but no "host is required" follows.
    message = error_of(tmp_path, "ids = [1]\n[source]\nkind = 'nope'\npath = '.'\n")
    assert "source.kind: must be one of" in message and "problems" not in message


@pytest.mark.parametrize(
    ("kind", "host", "archive"),
    [
        ("dir", "", ""),
        ("maildir", "", ""),
        ("mbox", "", ""),
        ("imap", "imap.gmail.com", "[Gmail]/All Mail"),
        ("imap", "imap.example.com", "Archive"),
        ("pop3", "pop.example.com", ""),
    ],
)
def test_each_source_kind_has_its_own_archive_default(tmp_path, kind, host, archive):
    text = f'ids = [1]\n[source]\nkind = "{kind}"\npath = "m"\nhost = "{host}"\n'
    text += 'user = "u"\npassword_env = "P"\n'
    assert load_monitor(write(tmp_path, text)).source.archive == archive
    set_text = text + 'archive = "Done"\n'
    assert load_monitor(write(tmp_path, set_text)).source.archive == "Done"


@pytest.mark.parametrize("codec", ["hex", "rot13", "base64", "zlib", "uu"])
@pytest.mark.parametrize("key", ["encoding", "output_encoding"])
def test_a_codec_that_is_not_a_text_encoding_is_refused_at_load(tmp_path, codec, key):
    message = error_of(tmp_path, VALID + f"[csv]\n{key} = '{codec}'\n")
    assert f"csv.{key}: '{codec}' is not a text encoding" in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "[deliver]\nftp_url = 'ftp://h'\nftp_dir = 'in/../../etc'\n",
            "deliver.ftp_dir: must not contain '..'",
        ),
        (
            "[[deliver]]\nurl = 'sftp://h/in/../up'\n",
            "deliver[0].url: the folder must not contain '..'",
        ),
    ],
)
def test_parent_folders_in_remote_folders_are_refused(tmp_path, extra, expected):
    text = VALID.replace('[deliver]\nto = "delivered"\n', "") + extra
    assert expected in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("deliver", "key", "where"),
    [
        ('[deliver]\nto = "state"\n', "deliver.to", "is the monitor's state folder"),
        ('[deliver]\nto = "state/downloads"\n', "deliver.to", "is inside exportmon's own part"),
        ('[deliver]\nto = "state/log/x"\n', "deliver.to", "is inside exportmon's own part"),
        ('[deliver]\nto = "."\n', "deliver.to", "holds the monitor's state folder"),
        (
            '[deliver]\nto = "out"\narchive_dir = "state/tmp/archive"\n',
            "deliver.archive_dir",
            "is inside",
        ),
        ('[[deliver]]\nurl = "state/pids"\n', "deliver[0].url", "is inside"),
        ('[[deliver]]\nurl = "out"\ntemp_dir = "../state"\n', "deliver[0].temp_dir", "is the"),
    ],
)
def test_a_destination_never_overlaps_what_the_state_folder_holds(tmp_path, deliver, key, where):
    text = VALID.replace('[deliver]\nto = "delivered"\n', "").replace(
        "ids = [777]", 'ids = [777]\nroot = "state"'
    )
    message = error_of(tmp_path, text + deliver)
    assert f"{key}: " in message and where in message
    assert "deliver to a folder of its own" in message


@pytest.mark.parametrize("hook", ["os:system", "subprocess:run", "builtins:exec", "os.path:join"])
def test_value_hooks_from_the_standard_library_are_refused(tmp_path, hook):
    message = error_of(tmp_path, VALID + f"[csv]\nvalue_hook = '{hook}'\n")
    assert "csv.value_hook: " in message and "standard-library module" in message


def test_a_hook_module_others_can_change_warns_and_strict_refuses(tmp_path, caplog):
    hooks = tmp_path / "myhooks.py"
    hooks.write_text("def clean(value):\n    return value.strip()\n")
    os.chmod(tmp_path, 0o700)
    path = write(tmp_path, VALID + "[csv]\nvalue_hook = 'myhooks:clean'\n")
    os.chmod(hooks, 0o600)
    load_monitor(path, strict=True)  # the owner's own file: fine
    os.chmod(hooks, 0o666)
    with caplog.at_level("WARNING"):
        load_monitor(path)
    assert "csv.value_hook" in caplog.text and "runs code" in caplog.text
    assert "writable" in caplog.text or "changed by group or others" in caplog.text
    with pytest.raises(ConfigError, match=r"csv\.value_hook: the hook runs code"):
        load_monitor(path, strict=True)
    os.chmod(hooks, 0o600)
    os.chmod(tmp_path, 0o777)
    with pytest.raises(ConfigError, match="can be changed by group or others"):
        load_monitor(path, strict=True)
    os.chmod(tmp_path, 0o700)


def test_secrets_are_found_from_the_schema(tmp_path, monkeypatch):
    from exportmon.notify.command import secret_variables

    text = VALID + (
        "[alerts]\ncommand = 'true'\nnotify_env = 'NOTIFY_URLS'\nsmtp_password_env = 'SMTP_PW'\n"
        "[heartbeat]\nurl_env = 'PING'\n"
    )
    text = text.replace(
        'password_env = "IMAP_PASSWORD"',
        'password_env = "IMAP_PASSWORD"\noauth_client_secret_env = "APP_SECRET"',
    )
    config = load_monitor(write(tmp_path, text))
    keys = {source.key for source in config.secret_sources()}
    assert {
        "source.password",
        "source.oauth_client_secret",
        "deliver.ftp_password",
        "alerts.smtp_password",
        "alerts.notify",
        "heartbeat.url",
    } <= keys
    assert secret_variables(config) == {
        "IMAP_PASSWORD",
        "APP_SECRET",
        "SMTP_PW",
        "NOTIFY_URLS",
        "PING",
    }


def test_a_second_secret_form_is_refused_for_every_secret(tmp_path):
    text = VALID + "[heartbeat]\nurl = 'https://hc/x'\nurl_command = 'echo x'\n"
    assert "heartbeat: set only one of url, url_command" in error_of(tmp_path, text)
    text = VALID.replace('[deliver]\nto = "delivered"\n', "") + (
        "[[deliver]]\nurl = 'sftp://h/in'\nssh_key_passphrase = 'a'\nssh_key_passphrase_env = 'B'\n"
    )
    assert "deliver[0]: set only one of ssh_key_passphrase, ssh_key_passphrase_env" in error_of(
        tmp_path, text
    )


def test_paths_are_resolved_from_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTS", str(tmp_path / "exports"))
    text = VALID.replace('[deliver]\nto = "delivered"\n', "") + (
        "[[deliver]]\nurl = '$EXPORTS/in'\n"
        "[[deliver]]\nurl = 'sftp://h/in'\nssh_key = 'id_ed25519'\n"
    )
    config = load_monitor(write(tmp_path, text))
    local, sftp = config.destinations
    assert local.url == str(tmp_path / "exports" / "in")
    assert sftp.url == "sftp://h/in" and sftp.ssh_key == str(tmp_path / "id_ed25519")


def test_plain_security_is_not_warned_about_at_load(tmp_path, caplog):
    text = VALID.replace('host = "imap.example.com"', 'host = "h"\nsecurity = "plain"')
    with caplog.at_level("WARNING"):
        load_monitor(write(tmp_path, text))
    assert "plain" not in caplog.text


def test_plain_security_is_warned_about_once_where_the_connection_is_made(tmp_path, mail_user):
    from fetchkit import write_config

    source = {
        "kind": "imap",
        "host": "127.0.0.1",
        "port": mail_user.ports.imap,
        "security": "plain",
        "user": mail_user.name,
        "password_env": "MAIL_PASS",
        "archive": "",
    }
    config = write_config(
        tmp_path,
        {
            "ids": [777],
            "root": str(tmp_path / "state"),
            "source": source,
            "deliver": {"to": str(tmp_path / "out")},
        },
    )
    env = {"MAIL_PASS": mail_user.password}
    warning = 'source.security = "plain": the mail password travels unencrypted'
    status = run_cli("-c", config, "status", env=env)
    assert warning not in status.stderr  # status never connects
    run = run_cli("-c", config, "run", "--once", env=env)
    assert run.code == 0, run.stderr
    assert run.stderr.count(warning) == 1, run.stderr
    quiet = run_cli("-c", config, "run", "--once", "-q", env=env)
    assert quiet.code == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("url = 'ftps://h/in'\nssh_key = 'id'\n", "deliver[0].ssh_key: applies only to sftp://"),
        ("url = '/srv/in'\ntoken_env = 'T'\n", "deliver[0].token_env: applies only to https://"),
        ("url = 'sftp://h/in'\npassive = false\n", "deliver[0].passive: applies only to ftp://"),
        ("url = '/srv/in'\ntrigger_name = '../x'\n", "deliver[0].trigger_name: must be part"),
        ("url = '/srv/in'\ntemp_suffix = ''\n", "deliver[0].temp_suffix: a file would be"),
        (
            "url = 'https://h/in'\nheaders = { X = \"a\\r\\nB: c\" }\n",
            "deliver[0].headers.X: a header holds a line break",
        ),
    ],
)
def test_kind_specific_destination_options_are_checked_at_load(tmp_path, entry, expected):
    text = VALID.replace('[deliver]\nto = "delivered"\n', "") + "[[deliver]]\n" + entry
    assert expected in error_of(tmp_path, text)


def test_the_defaults_of_kind_specific_options_pass_for_every_kind(tmp_path):
    text = VALID.replace('[deliver]\nto = "delivered"\n', "")
    for url in ("/srv/in", "ftps://h/in", "sftp://h/in", "https://h/in"):
        text += f"[[deliver]]\nurl = '{url}'\n"
    assert len(load_monitor(write(tmp_path, text)).destinations) == 4


def test_a_folder_of_its_own_inside_the_state_folder_still_loads(tmp_path):
    # What generate wrote before: <root>/delivered.
    text = VALID.replace('[deliver]\nto = "delivered"\n', "").replace(
        "ids = [777]", 'ids = [777]\nroot = "state"'
    )
    path = tmp_path / "m.toml"
    path.write_text(text + '[deliver]\nto = "state/delivered"\n')
    path.chmod(0o600)
    assert load_monitor(path).destinations[0].url == str(tmp_path / "state" / "delivered")
