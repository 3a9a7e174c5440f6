"""Secrets: where they come from, and that they never show in logs, errors or output."""

from __future__ import annotations

import logging

import pytest

from exportmon import redact
from exportmon.errors import SecretError
from exportmon.hooks.credentials import SecretSource, resolve
from exportmon.log import monitor_context, setup


def test_inline_env_and_command_sources(monkeypatch):
    assert resolve(SecretSource("p", value="inline-pw")) == "inline-pw"
    monkeypatch.setenv("MY_PW", "from-env-pw")
    assert resolve(SecretSource("p", env="MY_PW")) == "from-env-pw"
    assert resolve(SecretSource("p", command="printf 'cmd-pw\\nsecond line'")) == "cmd-pw"


def test_missing_env_and_failing_command_name_the_key(monkeypatch):
    monkeypatch.delenv("NOPE_PW", raising=False)
    with pytest.raises(SecretError) as info:
        resolve(SecretSource("source.password", env="NOPE_PW"))
    assert "source.password_env: environment variable NOPE_PW is not set" in info.value.one_line()
    with pytest.raises(SecretError) as info:
        resolve(SecretSource("source.password", command="echo oops >&2; exit 3"))
    assert "source.password_command: command exited with status 3: oops" in info.value.one_line()
    with pytest.raises(SecretError, match="printed nothing"):
        resolve(SecretSource("source.password", command="true"))


def test_command_output_is_masked_even_when_the_command_fails():
    with pytest.raises(SecretError) as info:
        resolve(SecretSource("k", command="echo Leaky-Secret-9; echo Leaky-Secret-9 >&2; exit 1"))
    assert "Leaky-Secret-9" not in info.value.one_line()


def test_redact_masks_registered_secrets_url_passwords_and_signatures():
    redact.register("s3cr3t-value")
    text = redact.redact(
        "login s3cr3t-value to ftp://bob:pa55w0rd@host/x and "
        "https://b.s3.amazonaws.com/f.csv?AWSAccessKeyId=AKIA&Signature=du%2B23&Expires=1"
    )
    assert "s3cr3t-value" not in text and "pa55w0rd" not in text and "du%2B23" not in text
    assert "ftp://bob:***@host/x" in text and "Signature=***" in text and "Expires=1" in text


def test_log_lines_and_files_are_redacted(tmp_path, capsys):
    setup(verbosity=1, fmt="text")
    redact.register("Hunter-2-Password")
    logger = logging.getLogger("exportmon.test")
    with monitor_context("777", tmp_path):
        logger.error("login failed for Hunter-2-Password")
        try:
            raise RuntimeError("boom Hunter-2-Password")
        except RuntimeError:
            logger.exception("crashed")
    logger.info("outside any monitor")
    err = capsys.readouterr().err
    log_text = (tmp_path / "export_monitor.777.log").read_text()
    for text in (err, log_text):
        assert "Hunter-2-Password" not in text
        assert "login failed for ***" in text
    assert "[777]" in log_text and "outside any monitor" not in log_text


def test_json_log_format(tmp_path, capsys):
    import json

    setup(fmt="json")
    with monitor_context("m1", None):
        logging.getLogger("exportmon.x").warning("hello %s", "world")
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["level"] == "warning" and record["monitor"] == "m1"
    assert record["message"] == "hello world"
