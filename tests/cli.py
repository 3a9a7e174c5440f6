"""Running the real ``exportmon`` command in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str | Path,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run ``python -m exportmon ARGS`` with the test's environment.

    Fails the test if the command printed a Python traceback without ``-v``:
    users must never see one.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    completed = subprocess.run(
        [sys.executable, "-m", "exportmon", *map(str, args)],
        input=input.encode() if isinstance(input, str) else input,
        capture_output=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    result = CliResult(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )
    verbose = any(str(a).startswith("-v") or str(a) == "--verbose" for a in args)
    if not verbose:
        assert "Traceback (most recent call last)" not in result.stderr, result.stderr
    return result
