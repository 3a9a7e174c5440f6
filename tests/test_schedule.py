"""expect_every: durations and cron expressions, the next expected arrival, lateness."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exportmon.config.load import parse
from exportmon.errors import ConfigError
from exportmon.schedule import lateness, local_zone, parse_schedule

UTC = timezone.utc


@pytest.mark.parametrize(("text", "seconds"), [("1d", 86400), ("12h", 43200), ("1w", 604800)])
def test_durations(text, seconds):
    schedule = parse_schedule(text)
    assert schedule.interval == seconds and schedule.cron is None
    assert schedule.describe().startswith("every ")


@pytest.mark.parametrize("text", ["0 6 * * 1", "30 7 1 * *", "0 6 * * MON-FRI", "0 0 L * *",
                                  "0 6 * * 1#1", "*/15 * * * *", "0 6  *  *  mon"])  # fmt: skip
def test_cron_expressions_that_are_accepted(text):
    schedule = parse_schedule(text)
    assert schedule.cron == " ".join(text.split()) and schedule.interval is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("daily", "neither a duration"),
        ("0 6 * *", "neither a duration"),
        ("0 6 * * 1 2026", "neither a duration"),
        ("61 6 * * *", "not a valid cron expression: Bad minute"),
        ("0 6 31 2 *", "not a valid cron expression"),
        ("0s", "every 0 seconds"),
        ("0 6 * * 1; rm", "neither a duration"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


def test_config_validation_uses_the_same_parser(tmp_path):
    base = {"ids": [777], "source": {"kind": "dir", "path": str(tmp_path)}}
    parse(
        {**base, "exports": {"777": {"expect_every": "0 6 * * MON-FRI"}}}, path=tmp_path / "m.toml"
    )
    with pytest.raises(ConfigError, match=r"exports\.777\.expect_every: .*Bad hour"):
        parse(
            {**base, "exports": {"777": {"expect_every": "0 25 * * *"}}}, path=tmp_path / "m.toml"
        )


@given(
    st.floats(min_value=60, max_value=60 * 86400),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_an_interval_expects_the_next_export_one_interval_after_the_last(seconds, last):
    last = last.replace(tzinfo=UTC)
    schedule = parse_schedule(str(seconds))
    assert schedule.next_after(last) == last + timedelta(seconds=seconds)


def test_cron_next_arrival_is_in_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    schedule = parse_schedule("0 6 * * 1")  # Mondays 06:00 Amsterdam time
    # Monday 23 November 2026, 05:10 UTC = 06:10 in Amsterdam (CET, UTC+1).
    arrival = datetime(2026, 11, 23, 5, 10, tzinfo=UTC)
    assert schedule.next_after(arrival) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    # In summer (CEST, UTC+2) the same expression is 04:00 UTC.
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert schedule.next_after(summer) == datetime(2026, 7, 6, 4, 0, tzinfo=UTC)
    monkeypatch.setenv("TZ", "UTC")
    assert local_zone().utcoffset(arrival) == timedelta(0)
    assert schedule.next_after(arrival) == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def test_lateness_verdicts():
    schedule = parse_schedule("1d")
    last = datetime(2026, 11, 20, 6, tzinfo=UTC)
    expected = last + timedelta(days=1)
    grace = 7200.0
    on_time = lateness(schedule, last, grace, expected - timedelta(minutes=1))
    assert on_time.verdict == "on_time" and on_time.expected_at == expected
    late = lateness(schedule, last, grace, expected + timedelta(hours=1))
    assert late.verdict == "late" and late.late_by == 3600
    missing = lateness(schedule, last, grace, expected + timedelta(hours=3))
    assert missing.verdict == "missing"
    assert lateness(schedule, None, grace, expected).verdict == "unknown"
    assert lateness(schedule, last, None, expected + timedelta(seconds=1)).verdict == "missing"
