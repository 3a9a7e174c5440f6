"""``python -m tests.hostile``: run every hostile-input case; print how many were tried, passed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent


class _Tally:
    """Counts the outcome of every hostile case (one test per case)."""

    def __init__(self) -> None:
        self.tried = 0
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not any(
            f"{name}[" in report.nodeid for name in ("test_hostile_case", "test_wrong_type")
        ):
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.tried += 1
            self.passed += report.passed and report.when == "call"


def main() -> int:
    tally = _Tally()
    code = pytest.main(
        [str(TESTS / "test_hostile.py"), "-q", "-p", "no:cacheprovider", *sys.argv[1:]],
        plugins=[tally],
    )
    print(f"hostile cases: tried {tally.tried}, passed {tally.passed}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
