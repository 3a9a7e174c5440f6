"""A pipeline stage starts fast: the command that runs imports only what it needs, and
option values are converted without building a pydantic schema per option."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer._click.exceptions import BadParameter
from typer.models import OptionInfo

from exportmon.commands.coercion import plain_runtime


def test_a_rewrite_outside_any_monitor_loads_neither_pydantic_nor_the_config(tmp_path):
    source = tmp_path / "a.csv"
    source.write_text("id,name\n1,a\n")
    probe = (
        "import sys\n"
        "sys.argv = ['exportmon', 'rewrite-csv', '--col-sep', '|', sys.argv[1]]\n"
        "from exportmon.commands import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'exportmon.config'))))"
    )
    env = {**os.environ, "EXPORTMON_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(source)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert source.read_text() == "id|name\n1|a\n"


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("annotation", "text", "expected"),
    [
        (str, "x", "x"),
        (Path | None, "/tmp/x", Path("/tmp/x")),
        (int, "12", 12),
        (float, "1.5", 1.5),
        (bool, "yes", True),
        (list[Path], ["a", "b"], [Path("a"), Path("b")]),
        (Colour, "red", Colour.RED),
    ],
)
def test_plain_values_convert_as_typer_would(annotation, text, expected):
    runtime = plain_runtime(annotation, OptionInfo())
    assert runtime is not None
    assert runtime._coerce_value(text, param=None, ctx=None) == expected


@pytest.mark.parametrize(("annotation", "text"), [(int, "x"), (float, "1,5"), (Colour, "blue")])
def test_a_bad_value_is_a_usage_error(annotation, text):
    runtime = plain_runtime(annotation, OptionInfo())
    assert runtime is not None
    with pytest.raises(BadParameter, match=repr(text)):
        runtime._coerce_value(text, param=None, ctx=None)


def test_options_typer_checks_itself_keep_typer_s_conversion():
    assert plain_runtime(int, OptionInfo(min=1)) is None
    assert plain_runtime(Path, OptionInfo(exists=True)) is None
    assert plain_runtime(tuple[int, int], OptionInfo()) is None
