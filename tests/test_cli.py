"""The CLI skeleton: help with examples everywhere, version, exit codes, completions in step."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cli import run_cli
from exportmon import __version__
from exportmon.commands.app import app
from exportmon.commands.completion import Shell, script

COMMANDS = [
    "generate",
    "fetch",
    "unzip",
    "rewrite-csv",
    "push-ftp",
    "run",
    "serve",
    "status",
    "report",
    "prune",
    "demo",
    "completion",
]
COMPLETIONS = Path(__file__).parent.parent / "completions"


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"exportmon {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = run_cli(command, "--help")
    assert result.code == 0
    assert "Example" in result.stdout, result.stdout


def test_top_level_help_lists_all_commands_and_global_options():
    result = run_cli("--help")
    for word in [*COMMANDS, "--config", "--verbose", "--quiet", "--log-format", "--version"]:
        assert word in result.stdout


def test_unknown_command_and_option_are_usage_errors():
    assert run_cli("frobnicate").code == 2
    assert run_cli("--log-format", "xml", "generate", "--list").code == 2


def test_python_dash_m_and_console_script_agree():
    console = shutil.which("exportmon", path=str(Path(__import__("sys").executable).parent))
    assert console, "the exportmon console script is installed next to the interpreter"
    completed = subprocess.run([console, "--version"], capture_output=True, text=True, check=False)
    assert completed.stdout.strip() == f"exportmon {__version__}"


@pytest.mark.parametrize("shell", list(Shell))
def test_completion_scripts_are_in_step_with_the_cli(shell):
    expected = script(app, shell)
    path = COMPLETIONS / f"exportmon.{shell.value}"
    assert path.read_text() == expected, (
        f"{path} is out of date: run `exportmon completion {shell.value} > {path}`"
    )
    for command in COMMANDS:
        assert command in expected


@pytest.mark.parametrize("shell", list(Shell))
def test_completion_scripts_are_valid_shell(shell):
    binary = shutil.which(shell.value)
    assert binary, f"{shell.value} is needed to check the completion script (.ci/run installs it)"
    path = COMPLETIONS / f"exportmon.{shell.value}"
    completed = subprocess.run(
        [binary, "-n", str(path)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


def test_bash_completion_completes_commands_and_options():
    completed = subprocess.run(
        [
            "bash",
            "-c",
            f"source {COMPLETIONS / 'exportmon.bash'}; COMP_WORDS=(exportmon gen); "
            "COMP_CWORD=1; _exportmon; echo ${COMPREPLY[@]}; "
            "COMP_WORDS=(exportmon generate --for); "
            "COMP_CWORD=2; _exportmon; echo ${COMPREPLY[@]}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.splitlines() == ["generate", "--force"]
