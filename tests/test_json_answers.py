"""JSON from other programs (exportmon/json_answers.py): nesting too deep for the
parser is malformed JSON like any other, for every reader of such JSON."""

from __future__ import annotations

import pytest

from cli import run_cli
from exportmon.deliver.conditions import AnswerError, parse_answer
from exportmon.deliver.https import extract_reference
from exportmon.json_answers import loads

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_too_deep_is_a_value_error():
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(DEEP)
    assert loads(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_a_deep_status_answer_or_upload_answer_is_malformed_not_a_crash():
    with pytest.raises(AnswerError, match="not valid JSON"):
        parse_answer(DEEP)
    assert extract_reference("/id", DEEP) is None


def test_a_deep_json_line_on_stdin_is_one_usage_line(tmp_path):
    result = run_cli("unzip", input=b'{"path": ' + DEEP + b"}\n")
    assert result.code == 2
    assert result.stderr.strip() == "exportmon: error: stdin line 1 is not valid JSON"
