"""Parsing JSON that another program sent (status answers, token and Graph replies,
JSON lines on stdin).

:func:`loads` is :func:`json.loads` with one difference: an answer nested deeper
than the parser can follow (``[[[[...]]]]``, a few kilobytes are enough) raises
:class:`ValueError`, like any other malformed JSON, instead of :class:`RecursionError`,
so every caller's one-line "not valid JSON" handling covers it.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: bytes | str) -> Any:
    """``data`` parsed; :class:`ValueError` when it is not JSON or nests too deeply."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
