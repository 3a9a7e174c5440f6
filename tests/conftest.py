"""Shared test setup: real-server fixtures, an isolated EXPORTMON_HOME, and the CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from exportmon import redact
from exportmon.hooks import credentials

pytest_plugins = ["servers.fixtures"]

# Property tests without their own max_examples (the CSV engine comparisons) run a few
# hundred cases by default (``ci``) and tens of thousands with ``thorough``:
# EXPORTMON_HYPOTHESIS_PROFILE=thorough, or pytest --hypothesis-profile=thorough.
_RELAXED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=300, **_RELAXED)
settings.register_profile("thorough", max_examples=20_000, **_RELAXED)
settings.load_profile(os.environ.get("EXPORTMON_HYPOTHESIS_PROFILE", "ci"))

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
