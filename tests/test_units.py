"""Durations and sizes in configs and flags."""

import pytest

from exportmon.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        (45, 45),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1.5h", 5400),
        (" 2 H ", 7200),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1", "1y", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        (7, 7),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("500MB", 500_000_000),
        ("2GiB", 2 * 1024**3),
        ("1.5GB", 1_500_000_000),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_formatting():
    assert format_duration(42) == "42s"
    assert format_duration(3700) == "1h 1m"
    assert format_duration(2 * 86400 + 3600) == "2d 1h"
    assert format_size(999) == "999 B"
    assert format_size(1_500_000) == "1.5 MB"
