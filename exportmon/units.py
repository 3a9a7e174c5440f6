"""Parsing and formatting of durations ("90s", "15m", "2h", "1d", "1w") and sizes ("2GB")."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a number of seconds or a string such as ``"15m"`` or ``"1d"``.

    Raises :class:`ValueError` with a message fit for the user.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError('expected a duration such as "30s", "15m", "2h" or "1d"')
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a duration")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f'{value!r} is not a duration such as "30s", "15m", "2h" or "1d"')
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[(unit or "s").lower()]


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: a number of bytes or a string such as ``"500MB"`` or ``"2GiB"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError('expected a size such as "500MB" or "2GiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f'{value!r} is not a size such as "500MB" or "2GiB"')
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_duration(seconds: float) -> str:
    """A short human form: ``"45s"``, ``"12m"``, ``"3h 5m"``, ``"2d 4h"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" if not seconds or minutes >= 10 else f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def format_size(size: float) -> str:
    """A short human form in decimal units: ``"512 B"``, ``"1.5 MB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 export"``, ``"2 exports"``; ``many`` for irregular plurals (``"1 entry"``)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def human_time(text: str | None, *, offset: bool = False) -> str:
    """Ledger time as local ``2026-11-23 09:40`` (with ``+0100`` if ``offset``), ``-`` for none."""
    from exportmon.ledger.db import from_text

    if not text:
        return "-"
    try:
        moment = from_text(text).astimezone()
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M %z" if offset else "%Y-%m-%d %H:%M")
