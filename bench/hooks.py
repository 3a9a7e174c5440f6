"""Value hooks the CSV benchmark uses (``value_hook = "bench.hooks:strip"``)."""

from __future__ import annotations


def strip(value: str) -> str:
    return value.strip()
