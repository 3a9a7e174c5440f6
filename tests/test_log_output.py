"""Sender text never acts on a terminal: control and format characters are escaped in
log lines, the log file, errors and tables, and every line is bounded."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exportmon.log import (
    MAX_MESSAGE_CHARS,
    JsonFormatter,
    TextFormatter,
    get_logger,
    log_file_name,
    monitor_context,
    printable,
)

HOSTILE = "Bob \x1b]0;owned\x07\x1b[2J \u202egnp.exe\u200b\r\nnext"


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("exportmon.test", logging.ERROR, __file__, 1, message, args, None)


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_escape_sequences_and_bidi_overrides_are_shown_escaped(formatter):
    line = formatter.format(record("mail from %s", HOSTILE))
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "\u202e" not in line and "\u200b" not in line and "\r" not in line
    text = json.loads(line)["message"] if line.startswith("{") else line
    assert "\\x1b]0;owned\\x07" in text and "\\u202e" in text


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_long_message_is_one_bounded_line_keeping_its_start_and_end(formatter):
    path = "/srv/" + "very-long-folder/" * 270 + "5-1-sites.csv"
    assert len(path) > 4500
    line = formatter.format(record("cannot copy %s: disk full (free some space)", path))
    assert len(line) < MAX_MESSAGE_CHARS + 200
    assert "cannot copy /srv/" in line and "disk full (free some space)" in line and " … " in line


@given(st.text(max_size=3000))
def test_printable_output_holds_no_control_or_format_character(text):
    shown = printable(text, MAX_MESSAGE_CHARS)
    assert len(shown) <= MAX_MESSAGE_CHARS
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Cn", "Zl", "Zp") for c in shown)


def test_the_log_file_gets_the_escaped_line(tmp_path):
    with monitor_context("777", tmp_path):
        get_logger("test").error("subject %s", HOSTILE)
    text = (tmp_path / log_file_name("777")).read_text()
    assert text.count("\n") == 1 and "\x1b" not in text and "\u202e" not in text
    assert "\\x1b" in text


def test_errors_notes_and_tables_are_escaped(capsys):
    from exportmon.commands.console import print_error, print_note, print_table

    print_error(HOSTILE)
    print_note(HOSTILE)
    print_table(["monitor", "reason"], [["777", HOSTILE]])
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in err and "\\x1b" in out
