"""Value hooks for the CSV engine tests (imported by name, as ``csv_hooks:upper``)."""

from __future__ import annotations


def upper(value: str) -> str:
    return value.upper()


def odd_types(value: str) -> object:
    """None for ``x``, the length for values starting with ``#``, text otherwise."""
    if value == "x":
        return None
    if value.startswith("#"):
        return len(value)
    return value


def newline(value: str) -> str:
    return value + "\n" if value else value


def boom(value: str) -> str:
    if "b" in value:
        raise ValueError("boom")
    return value
