"""JSON for machines: the data's own fields, times in ISO 8601 UTC, nothing left out."""

from __future__ import annotations

import json
from typing import Any


def json_text(data: Any) -> str:
    """``data`` (a ``to_dict()`` result) as indented JSON text ending in a newline."""
    return json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
