"""File names: deriving them from links and archives safely, and reading the export type.

Names come from hostile places (links in mails, entries in zips), so every name
that becomes a path goes through :func:`safe_file_name` first.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

#: Longest file name kept (bytes in UTF-8); most file systems allow 255.
MAX_NAME_BYTES = 200
EXPORT_SUFFIXES = (".csv", ".zip")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


class UnsafeName(ValueError):
    """A name that cannot be made into a safe file name."""


def safe_file_name(name: str) -> str:
    """``name`` made safe as a single path component, or :class:`UnsafeName`.

    Path separators, control characters (NUL included) and characters that
    Windows file shares refuse become ``_``; leading dots are dropped (no hidden
    files, no ``..``); over-long names are shortened keeping their suffix.
    """
    name = unicodedata.normalize("NFC", name).strip()
    name = _UNSAFE.sub("_", name).lstrip(".").strip()
    if not name or set(name) <= {"_", " "}:
        raise UnsafeName("empty file name")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        suffix = f".{suffix}" if dot and len(suffix) <= 10 else ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        stem_bytes = (stem if suffix else name).encode("utf-8")[:keep]
        name = stem_bytes.decode("utf-8", "ignore") + suffix
    return name


def name_from_link(link: str) -> str | None:
    """The export file name in ``link``: the last path segment ending in .csv or .zip.

    ``None`` when no segment has such a suffix (the caller then falls back to a
    Content-Disposition name or a generated one).
    """
    path = urlsplit(link).path
    for segment in reversed(path.split("/")):
        segment = unquote(segment)
        if segment.lower().endswith(EXPORT_SUFFIXES):
            try:
                return safe_file_name(segment)
            except UnsafeName:
                return None
    return None


def export_type(file_name: str) -> str | None:
    """The export type in an ITRP file name: after the last ``-``, before ``.csv``.

    ``5-20130923-072312-organizations.csv`` → ``organizations``; ``None`` when the
    name does not have that shape.
    """
    base = PurePosixPath(file_name).name
    if not base.lower().endswith(".csv"):
        return None
    stem = base[:-4]
    if "-" not in stem:
        return None
    kind = stem.rsplit("-", 1)[1]
    return kind or None


def relative_target(file_name: str, *, sub_dirs: bool) -> str:
    """Where a file goes inside a destination: ``<type>/<name>`` with sub_dirs, else ``<name>``."""
    name = safe_file_name(PurePosixPath(file_name).name)
    kind = export_type(name) if sub_dirs else None
    return f"{safe_file_name(kind)}/{name}" if kind else name
