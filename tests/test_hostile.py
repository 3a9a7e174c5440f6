"""Hostile and broken input, end to end: every case of ``tests/hostile`` through ``run --once``.

For every case: the exit code it defines, no traceback, a clear one-line message (or
the documented safe outcome), the hostile mail's fate in the ledger, nothing written
outside the monitor's folders, the mailbox and the destination, and the good export
mail of the same run delivered. ``python -m tests.hostile`` prints the count.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hostile import configs, csvs, links, mails, safety, zips
from hostile.cases import GOOD_CSV, GOOD_FILE, Case, Scene, matching_lines

from cli import CliResult, run_cli
from exportmon.ledger import Ledger

CASES: list[Case] = [
    *mails.CASES,
    *links.CASES,
    *zips.CASES,
    *csvs.CASES,
    *configs.CASES,
    *safety.CASES,
]
#: The longest line a message may have: one line a person can read.
MAX_LINE = 1000


def snapshot(top: Path, allowed: list[Path]) -> dict[str, tuple[str, int]]:
    """Every path under ``top`` outside ``allowed`` with its kind and size, and ``top``'s
    parent's entries (a write that escaped upwards)."""
    found: dict[str, tuple[str, int]] = {}
    for folder, dirs, files in os.walk(top, followlinks=False):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in allowed]
        for name in dirs + files:
            path = here / name
            if path in allowed:
                continue
            info = path.lstat()
            kind = "dir" if path.is_dir() else "link" if path.is_symlink() else "file"
            found[str(path.relative_to(top))] = (kind, 0 if kind == "dir" else info.st_size)
    for entry in top.parent.iterdir():
        if entry != top:
            found[f"../{entry.name}"] = ("entry", 0)
    return found


def ledger_outcome(scene: Scene, name: str) -> str:
    """What the ledger says became of the mail file ``name``."""
    with Ledger.open(scene.root / "ledger.sqlite") as ledger:
        found = [mail for mail in ledger.mails() if mail.uid == name]
        assert found, f"mail {name} is not in the ledger"
        mail = found[0]
        if mail.state in ("ignored", "failed"):
            return {"ignored": "ignored", "failed": "failed-mail"}[mail.state]
        exports = ledger.exports(mail_id=mail.id)
    assert exports, f"mail {name} is {mail.state} without exports"
    if all(e.state == "delivered" for e in exports) and mail.state in ("delivered", "archived"):
        return "delivered"
    if all(e.error for e in exports if e.state != "delivered"):
        return "failed-export"
    return f"unfinished ({mail.state}, {[e.state for e in exports]})"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    scene = Scene(tmp_path / "case", request.getfixturevalue)
    if case.good_mail:
        scene.good_mail()
    case.build(scene)
    options = scene.write()
    before = snapshot(tmp_path, scene.allowed())

    result = run_cli(
        *options,
        "run",
        "--once",
        env=scene.env,
        measure_memory=scene.measure_memory,
        timeout=600,
    )

    check_result(case, scene, result)
    assert snapshot(tmp_path, scene.allowed()) == before, "written outside the monitor's folders"
    for extra in scene.checks:
        extra(result)


def check_result(case: Case, scene: Scene, result: CliResult) -> None:
    assert result.code == case.code, f"exit {result.code}, expected {case.code}:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert all(len(line) <= MAX_LINE for line in lines), "a message longer than one line"
    assert "\x1b" not in result.stderr and "\x00" not in result.stderr, "control characters"
    if case.message is not None:
        assert matching_lines(case.message, result.stderr), (
            f"no line matches {case.message!r}:\n{result.stderr}"
        )
    if case.code == 1:
        assert [line for line in lines if line.startswith("ERROR")], result.stderr
    for name in scene.hostile:
        assert ledger_outcome(scene, name) == case.outcome, (name, result.stderr)
    if case.good_mail:
        delivered = scene.delivered / GOOD_FILE
        assert delivered.is_file(), f"the good export was not delivered:\n{result.stderr}"
        if "csv" not in scene.config:
            assert delivered.read_bytes() == GOOD_CSV
        assert (scene.mails / "Archive" / "good.eml").is_file(), "the good mail is not archived"


# --- every wrong type, in one run -------------------------------------------------------


@pytest.fixture(scope="module")
def wrong_type_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliResult]:
    base = tmp_path_factory.mktemp("wrong-types")
    monitors = base / "monitors"
    monitors.mkdir()
    for number, (text, _) in enumerate(configs.WRONG_TYPES.values()):
        path = monitors / f"type-{number:03d}.toml"
        path.write_text(text)
        path.chmod(0o600)
    good = monitors / "good.toml"
    mailbox = base / "mails"
    mailbox.mkdir()
    good.write_text(
        f'ids = [777]\nroot = "{base / "state"}"\n[source]\nkind = "dir"\npath = "{mailbox}"\n'
        f'archive = "Archive"\n[deliver]\nto = "{base / "delivered"}"\n'
    )
    good.chmod(0o600)
    scene_mail = Scene(base / "unused", lambda name: None)
    scene_mail.good_mail()
    (mailbox / "good.eml").write_bytes((scene_mail.mails / "good.eml").read_bytes())
    return base, run_cli("-c", monitors, "run", "--once", env={"HOME": str(base)})


@pytest.mark.parametrize("option", list(configs.WRONG_TYPES))
def test_wrong_type(option: str, wrong_type_run: tuple[Path, CliResult]) -> None:
    base, result = wrong_type_run
    assert result.code == 2
    number = list(configs.WRONG_TYPES).index(option)
    file_name = re.escape(f"type-{number:03d}.toml")
    lines = matching_lines(rf"{file_name}: {re.escape(option)}: ", result.stderr)
    assert len(lines) == 1, f"no one-line error for {option}:\n{result.stderr}"
    assert len(lines[0]) <= MAX_LINE
    assert (base / "delivered" / GOOD_FILE).read_bytes() == GOOD_CSV
