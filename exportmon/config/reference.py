"""The config reference, ``docs/config.md``, generated from the schema's metadata.

``python -m exportmon.config.reference > docs/config.md`` writes it; a test fails
when the page falls behind the schema. :func:`layout` (every table in the order
of the file) and :func:`toml_value` are shared with the generated config.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Literal

from exportmon.config.schema import (
    SOURCE_KIND_DEFAULTS,
    DeliverConfig,
    DestinationConfig,
    KindDefault,
    MonitorConfig,
    options_of,
    secret_fields,
    toml_name,
)


@dataclass(frozen=True)
class Table:
    """One table of the config file as it is written."""

    #: ``""`` (the top level), ``source``, ``[recognizers]`` (an array), ``exports.<id>``.
    name: str
    cls: Any
    doc: str
    array: bool = False

    @property
    def header(self) -> str:
        """``[source]``, ``[[deliver]]``, ``[exports.<id>]``; ``""`` for the top level."""
        if not self.name:
            return ""
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"


def layout() -> list[Table]:
    """Every table of a monitor config, in the order the file has them."""
    hints = typing.get_type_hints(MonitorConfig)
    tables = [Table("", MonitorConfig, "The top level: what to process and where state lives.")]
    for f in options_of(MonitorConfig):
        tp = _inner(hints[f.name])
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            if tp is DeliverConfig:
                tables.append(Table("deliver", DestinationConfig, _doc(DestinationConfig), True))
            tables.append(Table(toml_name(f), tp, _doc(tp)))
        elif origin is list and dataclasses.is_dataclass(args[0]):
            tables.append(Table(toml_name(f), args[0], _doc(args[0]), True))
        elif origin is dict and dataclasses.is_dataclass(args[1]):
            tables.append(Table(f"{toml_name(f)}.<id>", args[1], _doc(args[1])))
    return tables


def scalar_options(table: Table) -> list[dataclasses.Field[Any]]:
    """The options of ``table`` written as ``key = value`` (nested tables left out)."""
    hints = typing.get_type_hints(table.cls)
    found = []
    for f in options_of(table.cls):
        tp = _inner(hints[f.name])
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp) or (
            origin in (list, dict) and args and dataclasses.is_dataclass(args[-1])
        ):
            continue
        found.append(f)
    return found


def _doc(cls: Any) -> str:
    text = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    return re.sub(r"^``[^`]*``: ", "", text).replace("``", "`")


def _inner(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp


def default_of(f: dataclasses.Field[Any]) -> Any:
    """The field's default value (``MISSING`` when it has none)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


# --- TOML values ------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (one quote style everywhere)."""
    return json.dumps(value, ensure_ascii=False)


def format_duration(seconds: float) -> str:
    """``3600`` as ``"1h"``: the largest unit that divides it."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """``10_000_000_000`` as ``"10GB"``: the largest decimal unit that divides it."""
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def toml_value(value: Any, unit: str | None = None) -> str:
    """``value`` written in TOML; durations and sizes in their units."""
    if unit == "duration" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return toml_string(format_duration(value))
    if unit == "size" and isinstance(value, int) and not isinstance(value, bool):
        return toml_string(format_size(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (
            f"{k if _BARE_KEY.fullmatch(str(k)) else toml_string(str(k))} = {toml_value(v)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def placeholder(cls: type, f: dataclasses.Field[Any]) -> Any:
    """A value to show for an option that is unset by default: its example, or an
    empty value of its type."""
    if "example" in f.metadata:
        return f.metadata["example"]
    tp = _inner(typing.get_type_hints(cls)[f.name])
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)[0]
    if origin is list:
        return []
    if origin is dict:
        return {}
    return {str: "", int: 0, float: 0.0, bool: False}.get(tp, "")


# --- the reference page -----------------------------------------------------------------


def type_text(cls: type, f: dataclasses.Field[Any]) -> str:
    """The option's type in words: ``string``, ``"ssl" | "plain"``, ``list of strings``."""
    unit = f.metadata.get("kind")
    if unit == "duration":
        return 'duration ("30s", "15m", "2h", "1d", "1w"; a number is seconds)'
    if unit == "size":
        return 'size ("500MB", "2GiB"; a number is bytes)'
    if unit == "char":
        return "one character"
    return _type_words(_inner(typing.get_type_hints(cls)[f.name]))


def _type_words(tp: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(f"`{toml_value(a)}`" for a in args)
    if origin is list:
        return "list of " + _type_words(args[0], plural=True)
    if origin is dict:
        return "table of " + _type_words(args[1], plural=True)
    words = {str: "string", int: "integer", float: "number", bool: "boolean"}
    word = words.get(tp, getattr(tp, "__name__", str(tp)))
    return word + "s" if plural else word


def default_text(cls: type, f: dataclasses.Field[Any]) -> str:
    """The default as the reference states it."""
    if f.metadata.get("by_kind"):
        parts = []
        for kind, defaults in SOURCE_KIND_DEFAULTS.items():
            if f.name in defaults:
                value = defaults[f.name]
                shown = value.describe if isinstance(value, KindDefault) else toml_value(value)
                parts.append(f"{kind}: {shown}")
        return "by kind — " + "; ".join(parts)
    value = default_of(f)
    if value is None:
        return "unset"
    return f"`{toml_value(value, f.metadata.get('kind'))}`"


def notes(cls: type, f: dataclasses.Field[Any]) -> list[str]:
    """What the metadata says besides the doc: secret, path, runs code."""
    found = []
    meta = f.metadata
    if meta.get("secret"):
        forms = [n for n in next(g for g in secret_fields(cls) if g[0] == f.name)[1:] if n]
        also = " or ".join(f"`{n}`" for n in forms)
        found.append(f"**Secret**; set at most one of it{', ' + also if also else ''}.")
    if meta.get("path") == "url":
        found.append("A folder is a path: `~`, `$VAR`, relative to the config file.")
    elif meta.get("path"):
        found.append("A path: `~` and `$VAR` expanded, relative to the config file.")
    if meta.get("exists"):
        found.append("Must exist when the config is loaded.")
    if meta.get("code"):
        found.append("**Runs code.**")
    if meta.get("applies_to"):
        kinds = ", ".join(f"`{kind}://`" for kind in meta["applies_to"])
        found.append(f"Only for {kinds} destinations.")
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The Markdown of ``docs/config.md``."""
    lines = [
        "# Config reference",
        "",
        "Every option of a monitor config, generated from `exportmon/config/schema.py`",
        "by `python -m exportmon.config.reference` (a test keeps it current).",
        "The [Configuration](configuration.md) page explains where configs live and how",
        "they are checked; `exportmon generate` writes a file with all of these options.",
        "",
        "Durations take `s`, `m`, `h`, `d`, `w` (a bare number is seconds); sizes take",
        "`kB`, `MB`, `GB`, `TB` and `KiB`, `MiB`, `GiB`, `TiB` (a bare number is bytes).",
        "A secret can be written in the file, named as an environment variable",
        "(`<name>_env`) or printed by a command (`<name>_command`, run with `/bin/sh -c`,",
        "its first output line): set at most one of the three.",
        "",
    ]
    for table in layout():
        title = f"`{table.header}`" if table.header else "Top level"
        doc = table.doc[:1].upper() + table.doc[1:]
        lines += [f"## {title}", "", _cell(doc), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for f in scalar_options(table):
            doc = f.metadata.get("doc", "")
            text = doc + "." if doc else ""
            text = " ".join([text, *notes(table.cls, f)])
            if "example" in f.metadata and default_of(f) in (None, [], {}, ""):
                example = toml_value(f.metadata["example"], f.metadata.get("kind"))
                text += f" Example: `{example}`."
            lines.append(
                f"| `{toml_name(f)}` | {_cell(type_text(table.cls, f))} | "
                f"{_cell(default_text(table.cls, f))} | {_cell(text)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
