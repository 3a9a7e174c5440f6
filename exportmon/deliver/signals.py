"""Completion signals: how a receiving system knows a delivery is complete.

Shared by every kind of destination (local, FTP/FTPS, SFTP); the kind modules only
write bytes and rename. Three signals, each set per ``[[deliver]]`` entry:

* **temporary naming** (:class:`TempNaming`): a file is written as
  ``<temp_prefix><name><temp_suffix>`` beside its final name, or in ``temp_dir``
  (on the same file system or server), and renamed to its final name only once it
  is complete. The default is ``<name>.in_progress`` (the gem's);
* **trigger files** (``trigger = "file"`` or ``"export"``): an empty file (or, with
  ``trigger_content = true``, one holding the row count and SHA-256 of what it
  announces) written after the data: beside each file, or one per export at the
  destination's top folder once every file of the export is there;
* **a manifest** (``manifest = "json"`` or ``"csv"``): every file of the export with
  its size, rows and SHA-256, written last.

Triggers and manifests are delivered like files (temporary name, then rename), so
they appear complete or not at all, and are recorded in the ledger as deliveries
without a file (their ``source_path`` is :data:`SIGNAL_PREFIX` + kind): after a
crash they are written on the next run, never before the data they announce and
never twice. Their content is a function of the ledger's records only (no clock),
so a signal found complete after a crash is recognised by its SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from exportmon.deliver import IN_PROGRESS
from exportmon.errors import DeliveryError, UsageError

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig

#: ``source_path`` of a signal's delivery record: ``signal:trigger``, ``signal:manifest``.
SIGNAL_PREFIX = "signal:"
#: The placeholders ``trigger_name`` and ``manifest_name`` may use.
PLACEHOLDERS = ("name", "export", "type", "format")


@dataclass(frozen=True)
class TempNaming:
    """Where a file is written before it is renamed to its final name.

    ``dir`` is relative to the destination's folder, or absolute; it must be on the
    same file system (server) so the final step is a rename.
    """

    suffix: str = IN_PROGRESS
    prefix: str = ""
    dir: str | None = None

    def __post_init__(self) -> None:
        for text, what in ((self.suffix, "temp_suffix"), (self.prefix, "temp_prefix")):
            if "/" in text or "\\" in text or "\0" in text:
                raise UsageError(f"{what} must not contain a folder separator: {text!r}")
        if self.dir is not None and (not self.dir.strip() or "\0" in self.dir):
            raise UsageError("temp_dir must name a folder")
        if self.dir is not None and ".." in self.dir.replace("\\", "/").split("/"):
            raise UsageError(f"temp_dir must not contain '..': {self.dir!r}")
        if not self.suffix and not self.prefix and self.dir is None:
            raise UsageError(
                "temp_suffix and temp_prefix are both empty: files would be written "
                "under their final names",
                hint='keep temp_suffix = ".in_progress", or set temp_prefix or temp_dir',
            )

    @classmethod
    def of(cls, config: DestinationConfig) -> TempNaming:
        """The temporary naming a ``[[deliver]]`` entry asks for."""
        return cls(config.temp_suffix, config.temp_prefix, config.temp_dir or None)

    def temporary(self, target: str) -> str:
        """The path ``target`` is written under first: relative to the destination's
        folder, or absolute when ``dir`` is. Sub-folders of ``target`` are kept below
        ``dir``, so two files of the same name never share a temporary one."""
        folder, _, base = target.rpartition("/")
        name = f"{self.prefix}{base}{self.suffix}"
        if self.dir is None:
            return f"{folder}/{name}" if folder else name
        root = self.dir.replace("\\", "/").rstrip("/") or "/"
        return posixpath.join(root, folder, name) if folder else posixpath.join(root, name)

    def describe(self) -> str:
        """How a file is written, for dry runs: ``as <name>.in_progress, then renamed``."""
        shown = f"{self.prefix}<name>{self.suffix}"
        if self.dir is None:
            return f"as {shown}, then renamed"
        return f"as {shown} in {self.dir}, then moved out"


@dataclass(frozen=True)
class Announced:
    """A file a signal announces, as it is at the destination."""

    #: Its path at the destination (with a time stamp under ``overwrite = "timestamp"``).
    target: str
    bytes: int
    rows: int | None
    sha256: str
    type: str | None = None


@dataclass(frozen=True)
class Signal:
    """A trigger file or a manifest: a small file written after the data."""

    kind: Literal["trigger", "manifest"]
    target: str
    content: bytes

    @property
    def marker(self) -> str:
        """``source_path`` of its delivery record in the ledger."""
        return SIGNAL_PREFIX + self.kind

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def is_signal(source_path: str) -> bool:
    """Whether a delivery record with this ``source_path`` is a trigger or manifest."""
    return source_path.startswith(SIGNAL_PREFIX)


def check_template(template: str, key: str) -> None:
    """:class:`UsageError` unless ``template`` is a usable ``trigger_name`` /
    ``manifest_name``: placeholders among :data:`PLACEHOLDERS`, a plain file name."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise UsageError(f"{key}: {exc}", hint="write a literal brace as {{ or }}") from None
    unknown = sorted(set(fields) - set(PLACEHOLDERS))
    if unknown:
        raise UsageError(
            f"{key}: unknown placeholder {{{unknown[0]}}}",
            hint="use " + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
        )
    if not template.strip() or "/" in template or "\\" in template:
        raise UsageError(f"{key} must be a file name without folders: {template!r}")


def signal_name(template: str, *, name: str, export: str, type: str | None, format: str) -> str:
    """``template`` filled in; :class:`DeliveryError` for a name that is no plain file name."""
    filled = template.format(name=name, export=export, type=type or "", format=format)
    if not filled or filled in (".", "..") or "/" in filled or "\\" in filled or "\0" in filled:
        raise DeliveryError(f"the signal name {template!r} gives {filled!r}: not a file name")
    return filled


def export_name(file_name: str | None, fallback: str) -> str:
    """What ``{export}`` stands for: the export's file name without its extension
    (``20130923-072313-export``), else ``fallback``."""
    base = posixpath.basename((file_name or "").replace("\\", "/"))
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return stem or fallback


def file_trigger(config: DestinationConfig, export: str, item: Announced) -> Signal | None:
    """The trigger announcing one file (``trigger = "file"``), beside it; else ``None``."""
    if config.trigger != "file":
        return None
    folder, _, base = item.target.rpartition("/")
    name = signal_name(config.trigger_name, name=base, export=export, type=item.type, format="")
    content = _trigger_content([item]) if config.trigger_content else b""
    return Signal("trigger", f"{folder}/{name}" if folder else name, content)


def export_signals(
    config: DestinationConfig, export: str, items: Sequence[Announced], *, export_id: int | None
) -> list[Signal]:
    """The signals written once every file of an export is at the destination, in
    the order they are written: the export's trigger, then the manifest (last)."""
    found: list[Signal] = []
    if config.trigger == "export":
        name = signal_name(config.trigger_name, name=export, export=export, type=None, format="")
        content = _trigger_content(items) if config.trigger_content else b""
        found.append(Signal("trigger", name, content))
    if config.manifest is not None:
        fmt = config.manifest
        name = signal_name(config.manifest_name, name=export, export=export, type=None, format=fmt)
        render = render_json if fmt == "json" else render_csv
        found.append(Signal("manifest", name, render(export, items, export_id=export_id)))
    return found


def _trigger_content(items: Sequence[Announced]) -> bytes:
    """``name=``, ``rows=`` (when counted), ``bytes=``, ``sha256=`` lines per file,
    files separated by an empty line."""
    blocks = []
    for item in items:
        lines = [f"name={item.target}"]
        if item.rows is not None:
            lines.append(f"rows={item.rows}")
        lines += [f"bytes={item.bytes}", f"sha256={item.sha256}"]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks).encode("utf-8")


def render_json(export: str, items: Sequence[Announced], *, export_id: int | None) -> bytes:
    """The JSON manifest: ``{"export", "export_id", "files": [{name, bytes, rows, sha256}]}``."""
    document = {
        "export": export,
        "export_id": export_id,
        "files": [
            {"name": i.target, "bytes": i.bytes, "rows": i.rows, "sha256": i.sha256} for i in items
        ],
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def render_csv(export: str, items: Sequence[Announced], *, export_id: int | None) -> bytes:
    """The CSV manifest: a ``name,bytes,rows,sha256`` header and one line per file
    (``rows`` empty where it was not counted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "bytes", "rows", "sha256"])
    for item in items:
        writer.writerow(
            [item.target, item.bytes, "" if item.rows is None else item.rows, item.sha256]
        )
    return out.getvalue().encode("utf-8")


def describe(config: DestinationConfig) -> list[str]:
    """The signals of a ``[[deliver]]`` entry in words, for dry runs (may be empty)."""
    parts = []
    if config.trigger == "file":
        parts.append(f"a trigger {config.trigger_name} after each file")
    elif config.trigger == "export":
        parts.append(f"a trigger {config.trigger_name} after the export")
    if config.trigger and config.trigger_content:
        parts[-1] += " (rows and SHA-256)"
    if config.manifest:
        parts.append(f"a {config.manifest} manifest {config.manifest_name} last")
    return parts
