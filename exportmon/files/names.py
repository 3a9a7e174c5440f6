"""File names: deriving them from links and archives safely, and reading the export type.

Names come from hostile places (links in mails, entries in zips), so every name
that becomes a path goes through :func:`safe_file_name` first.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

#: Longest file name kept (bytes in UTF-8); most file systems allow 255.
MAX_NAME_BYTES = 200
EXPORT_SUFFIXES = (".csv", ".zip")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
#: Suffixes of exportmon's own files at a destination: no delivered name ends so.
RESERVED_SUFFIXES = (".in_progress",)


class UnsafeName(ValueError):
    """A name that cannot be made into a safe file name."""


def visible_text(text: str, replacement: str = "") -> str:
    """``text`` without format characters (Unicode category Cf: bidi overrides such as
    U+202E, zero-width spaces, the BOM) and with other control and separator
    characters (Cc, Zl, Zp; ESC and BEL among them) replaced by ``replacement``."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        out.append(replacement if category in ("Cc", "Zl", "Zp") else char)
    return "".join(out)


def safe_file_name(name: str) -> str:
    """``name`` made safe as a single path component, or :class:`UnsafeName`.

    Format characters (bidi overrides, zero-width characters) are removed; path
    separators, control characters (NUL included) and characters that Windows file
    shares refuse become ``_``; leading dots are dropped (no hidden files, no ``..``,
    and none of exportmon's own ``.``-names); a name ending in a reserved suffix
    (``.in_progress``) gets ``_`` for its dot; over-long names are shortened keeping
    their suffix.
    """
    name = visible_text(unicodedata.normalize("NFC", name), "_").strip()
    # Dots and spaces together: ". .csv" must not become the hidden ".csv".
    name = _UNSAFE.sub("_", name).lstrip(". ").rstrip()
    if not name or set(name) <= {"_", " "}:
        raise UnsafeName("empty file name")
    for reserved in RESERVED_SUFFIXES:
        if name.casefold().endswith(reserved):
            name = name[: -len(reserved)] + "_" + name[-len(reserved) + 1 :]
    return _shortened(name, MAX_NAME_BYTES)


def _shortened(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8, its suffix (up to 10 characters) kept."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and len(suffix) <= 10 else ""
    keep = limit - len(suffix.encode("utf-8"))
    stem_bytes = (stem if suffix else name).encode("utf-8")[:keep]
    return stem_bytes.decode("utf-8", "ignore") + suffix


def name_key(name: str) -> str:
    """What makes two names the same file somewhere: equal after NFC normalisation and
    case folding (case-insensitive file systems and FTP servers)."""
    return unicodedata.normalize("NFC", name).casefold()


def distinct_name(name: str, taken: set[str]) -> str:
    """``name``, or, when its :func:`name_key` is in ``taken``, ``name`` with ``~2``,
    ``~3`` … put before its suffix (``a.csv`` → ``a~2.csv``), shortened to stay within
    :data:`MAX_NAME_BYTES`. The key of the name returned is added to ``taken``."""
    candidate = name
    number = 1
    while name_key(candidate) in taken:
        number += 1
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            stem, suffix = name, ""
        else:
            suffix = "." + suffix
        mark = f"~{number}{suffix}"
        room = MAX_NAME_BYTES - len(mark.encode("utf-8"))
        candidate = stem.encode("utf-8")[:room].decode("utf-8", "ignore") + mark
    taken.add(name_key(candidate))
    return candidate


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
                name = safe_file_name(segment)
            except UnsafeName:
                return None
            # ".csv" alone becomes "csv": no name, and no longer a CSV file.
            return name if name.lower().endswith(EXPORT_SUFFIXES) else None
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


def relative_target(file_name: str, *, sub_dirs: bool, kind: str | None = None) -> str:
    """Where a file goes inside a destination: ``<type>/<name>`` with sub_dirs, else ``<name>``.

    ``kind`` is a type recorded for the file (a drop folder's ``[[types]]`` rule); it
    wins over the one its name gives."""
    name = safe_file_name(PurePosixPath(file_name).name)
    kind = (kind or export_type(name)) if sub_dirs else None
    return f"{safe_file_name(kind)}/{name}" if kind else name


def safe_relative_path(name: str) -> str:
    """An archive entry name made into a safe relative path (``a/b.csv``), or :class:`UnsafeName`.

    ``\\`` counts as a separator too (archives made on Windows). Absolute paths, drive
    letters, ``..`` components and NUL bytes are refused rather than repaired: an
    archive that holds them is hostile. Empty and ``.`` components are dropped and
    every other component goes through :func:`safe_file_name`.
    """
    if "\x00" in name:
        raise UnsafeName("NUL byte in the name")
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        raise UnsafeName("absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if any(part.strip() == ".." for part in parts):
        raise UnsafeName("'..' in the path (zip slip)")
    if not parts:
        raise UnsafeName("empty file name")
    return "/".join(safe_file_name(part) for part in parts)


def entry_target(entry_name: str, *, sub_dirs: bool, kind: str | None = None) -> str:
    """Where an archive entry goes, relative to the extraction folder or destination.

    The entry's own folders are kept (as the gem did); with ``sub_dirs`` the export
    type's folder is put in front: ``organizations/5-1-organizations.csv``. ``kind``
    (the archive's recorded type) wins over the type in the entry's name.
    """
    path = safe_relative_path(entry_name)
    kind = (kind or export_type(path)) if sub_dirs else None
    return f"{safe_file_name(kind)}/{path}" if kind else path


def timestamp_text(moment: datetime | None = None) -> str:
    """``moment`` (default now) as the UTC stamp put in file names: ``20260123T084000Z``."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def timestamped_name(relative: str, moment: datetime | None = None, *, counter: int = 0) -> str:
    """``relative`` with a UTC time stamp appended to its stem, the suffix kept.

    ``in/5-1-sites.csv`` → ``in/5-1-sites.20260123T084000Z.csv``; ``counter`` > 0
    adds ``-2``, ``-3`` … for names taken within the same second.
    """
    folder, _, base = relative.rpartition("/")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem:
        stem, suffix = base, ""
    else:
        suffix = "." + suffix
    stamp = timestamp_text(moment) + (f"-{counter + 1}" if counter else "")
    name = f"{stem}.{stamp}{suffix}"
    return f"{folder}/{name}" if folder else name
