"""Global options where users type them, help that fits 80 columns, and a light start."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monitoring import write_monitor
from test_cli import COMMANDS

from cli import run_cli

GLOBAL = ["--config", "-c", "--verbose", "-v", "--quiet", "-q", "--log-format", "--strict"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_lists_the_global_options_and_fits_80_columns(command):
    result = run_cli(command, "--help", env={"COLUMNS": "80"})
    assert result.code == 0, result.output
    for option in GLOBAL:
        assert re.search(rf"(^|[ ,]){re.escape(option)}\b", result.stdout), option
    for junk in ("<bool>", "<int>", "<str>", "<list[", "[[", "\\["):
        assert junk not in result.stdout, (junk, result.stdout)
    too_wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert "…" not in result.stdout


def test_top_level_help_shows_verbose_as_a_counter_and_fits_80_columns():
    result = run_cli("--help", env={"COLUMNS": "80"})
    assert re.search(r"-v, --verbose +More detail", result.stdout), result.stdout
    assert "[default: 0]" not in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert "before or after the command" in result.stdout


@pytest.mark.parametrize("command", ["status", "report", "prune", "run"])
def test_help_paragraphs_are_rewrapped_not_cut_mid_sentence(command):
    for columns in (60, 80):
        text = run_cli(command, "--help", env={"COLUMNS": str(columns)}).stdout
        description = text.split("\n\n", 1)[1].split("Options:")[0]
        for paragraph in description.split("\n\n"):
            lines = paragraph.splitlines()
            assert all(len(line) <= columns for line in lines), lines
            for line, following in itertools.pairwise(lines):
                # a short line followed by the rest of its sentence: a hard wrap
                assert not (len(line) < columns - 30 and following.strip()[:1].islower()), lines


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["-c", "{c}", "status", "--json"], ["status", "--json", "-c", "{c}"]),
        (["--config", "{c}", "status", "--json"], ["status", "--config", "{c}", "--json"]),
        (["-q", "-c", "{c}", "status", "--json"], ["status", "-q", "--json", "--config={c}"]),
        (
            ["--strict", "-c", "{c}", "status", "--json"],
            ["status", "--strict", "-c", "{c}", "--json"],
        ),
    ],
)
def test_global_options_work_after_the_command(tmp_path, before, after):
    config = str(write_monitor(tmp_path))
    first = run_cli(*[a.format(c=config) for a in before])
    second = run_cli(*[a.format(c=config) for a in after])
    assert first.code == second.code == 0, (first.output, second.output)

    def summary(text: str) -> list[tuple[str, str, str]]:
        data = json.loads(text)
        return [(data["state"], m["monitor"], m["state"]) for m in data["monitors"]]

    assert summary(first.stdout) == summary(second.stdout)


def _fresh_monitor(directory: Path) -> Path:
    """A monitor whose mail folder holds one mail it has not seen yet."""
    config = write_monitor(directory)
    shutil.copy(Path(__file__).parent / "fixtures/itrp-gem/non_export.eml", directory / "mails")
    return config


def test_run_once_with_options_after_the_command(tmp_path):
    quiet = run_cli("run", "--once", "-c", _fresh_monitor(tmp_path / "1"), "-q")
    assert quiet.code == 0, quiet.output
    assert quiet.stderr == ""
    verbose = run_cli("run", "--once", "-c", _fresh_monitor(tmp_path / "2"), "-vv")
    assert verbose.code == 0, verbose.output
    assert " DEBUG " in verbose.stderr
    counted = run_cli("-v", "run", "--once", "-c", _fresh_monitor(tmp_path / "3"), "-v")
    assert " DEBUG " in counted.stderr
    config = _fresh_monitor(tmp_path / "4")
    as_json = run_cli("run", "--once", "--log-format", "json", "-c", config, "-v")
    lines = as_json.stderr.splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)


def test_repeated_config_before_and_after_adds_up(tmp_path):
    one = write_monitor(tmp_path / "a", "one")
    two = write_monitor(tmp_path / "b", "two")
    result = run_cli("-c", one, "status", "--json", "-c", two)
    names = {m["monitor"] for m in json.loads(result.stdout)["monitors"]}
    assert names == {"one", "two"}


def test_a_typo_in_a_command_suggests_the_name():
    result = run_cli("statsu")
    assert result.code == 2 and "Did you mean 'status'" in result.stderr


def _imported(*args: str) -> set[str]:
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['exportmon', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_module('exportmon', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write(' '.join(sorted(sys.modules)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    return set(completed.stderr.split()[-1000:]) if completed.stderr else set()


def test_help_and_version_import_no_command_and_no_heavy_library():
    for args in (("--version",), ("--help",)):
        modules = _imported(*args)
        assert "exportmon.commands.run" not in modules
        heavy = {"rich", "polars", "imapclient", "ftputil", "sqlite3", "exportmon.config.load"}
        assert not heavy & modules, (args, heavy & modules)
    assert "typer" not in _imported("--version")


def test_a_command_imports_only_its_own_module(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    modules = _imported("rewrite-csv", "--col-sep", ";", str(data))
    assert data.read_text() == "a;b\n1;2\n"
    others = {m for m in modules if m.startswith("exportmon.commands.")}
    assert others <= {
        "exportmon.commands.app",
        "exportmon.commands.registry",
        "exportmon.commands.coercion",
        "exportmon.commands.common",
        "exportmon.commands.console",
        "exportmon.commands.pipeio",
        "exportmon.commands.steps",
        "exportmon.commands.rewrite_csv",
    }, others
    assert not {"rich", "imapclient", "ftputil", "exportmon.download"} & modules


def test_completion_offers_the_shells_and_installs(tmp_path):
    script = run_cli("completion", "bash").stdout
    completed = subprocess.run(
        ["bash", "-c", script + '\nCOMP_WORDS=(exportmon completion ""); COMP_CWORD=2; '
         '_exportmon; echo "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert {"bash", "zsh", "fish"} <= set(completed.stdout.split())
    home = tmp_path / "home"
    result = run_cli("completion", "bash", "--install", env={"HOME": str(home)})
    installed = home / ".local/share/bash-completion/completions/exportmon"
    assert result.code == 0 and installed.read_text() == script
    assert "bash-completion" in result.stderr
    zsh = run_cli("completion", "zsh", "--install", env={"HOME": str(home)})
    assert (home / ".zfunc/_exportmon").exists() and "fpath" in zsh.stderr


def test_readme_units_and_cron_line_run_the_same_installed_command():
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert "pipx install ." in readme and "~/.local/bin/exportmon" in readme
    for unit in (root / "contrib/systemd").glob("*.service"):
        starts = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
        assert starts and all(s.startswith("ExecStart=%h/.local/bin/exportmon ") for s in starts)
    running = (root / "docs/running.md").read_text()
    assert "$HOME/.local/bin/exportmon -q run --once" in running
