"""Running the real ``exportmon`` command in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    #: Peak resident memory of the child in KiB (``run_cli(..., measure_memory=True)``).
    peak_rss_kib: int | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str | Path,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    measure_memory: bool = False,
) -> CliResult:
    """Run ``python -m exportmon ARGS`` with the test's environment.

    Fails the test if the command printed a Python traceback without ``-v``:
    users must never see one. ``measure_memory`` records the child's peak RSS.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    argv = [sys.executable, "-m", "exportmon", *map(str, args)]
    data = input.encode() if isinstance(input, str) else input
    if measure_memory:
        result = _run_measured(argv, data, full_env, cwd, timeout)
    else:
        completed = subprocess.run(
            argv,
            input=data,
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


def _run_measured(
    argv: list[str], data: bytes | None, env: dict[str, str], cwd: Path | None, timeout: float
) -> CliResult:
    """Run ``argv`` and reap it with ``wait4`` to read its peak resident memory."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        chunks[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", process.stdout)),
        threading.Thread(target=drain, args=("err", process.stderr)),
    ]
    for reader in readers:
        reader.start()
    assert process.stdin is not None
    with process.stdin:
        if data:
            process.stdin.write(data)
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return CliResult(
        process.returncode,
        chunks["out"].decode("utf-8", "replace"),
        chunks["err"].decode("utf-8", "replace"),
        peak_rss_kib=usage.ru_maxrss,
    )
