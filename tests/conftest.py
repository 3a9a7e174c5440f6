"""Shared test setup: real-server fixtures, an isolated EXPORTMON_HOME, and the CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportmon import redact
from exportmon.hooks import credentials

pytest_plugins = ["servers.fixtures"]

GEM_FIXTURES = Path(__file__).parent / "fixtures" / "itrp-gem"


@pytest.fixture(autouse=True)
def exportmon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config and state directory, and no leftover secrets."""
    home = tmp_path / "exportmon-home"
    monkeypatch.setenv("EXPORTMON_HOME", str(home))
    credentials.clear_cache()
    redact.forget_all()
    return home


@pytest.fixture
def gem_fixtures() -> Path:
    """The itrp-export-monitor gem's test mails and zip (see fixtures/itrp-gem/NOTICE.md)."""
    return GEM_FIXTURES
