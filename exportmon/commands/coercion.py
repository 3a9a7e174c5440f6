"""Turning command-line text into values without building a pydantic schema per option.

Typer 0.29 converts every option's value through a pydantic ``TypeAdapter``, built
for each parameter of the command that runs, at every start: about 0.15 s and the
import of pydantic, for options that are text, paths, numbers, flags and choices.
That is most of the start-up of a pipeline stage such as ``rewrite-csv``. For
exactly those types (alone, optional or in a list, without typer's range or path
checks) :func:`plain_runtime` gives a direct conversion with the same results;
anything else keeps typer's own.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_WORDS = {int: "an integer", float: "a number", bool: "true or false"}
#: Parameter settings typer checks during its conversion: left to typer.
_CHECKED = ("min", "max", "parser", "click_type", "exists", "resolve_path", "mode")


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    """A conversion for ``str``, ``Path``, ``int``, ``float``, ``bool`` and enums."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        return _convert(self.annotation, value, param, ctx)


def plain_runtime(annotation: Any, parameter_info: Any) -> PlainRuntimeParam | None:
    """The plain conversion for a parameter, or None when typer's is needed."""
    if parameter_info is None or not _simple(annotation):
        return None
    if any(getattr(parameter_info, name, None) not in (None, False) for name in _CHECKED):
        return None
    if getattr(parameter_info, "case_sensitive", True) is False:
        return None
    return PlainRuntimeParam(parameter_info=parameter_info, annotation=annotation)


def install(params: typing.Iterable[Any]) -> None:
    """Give each of ``params`` the plain conversion where it applies."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", None) is not None:
            continue
        if descriptor.file_annotation is not None:
            continue
        plain = plain_runtime(descriptor.annotation, descriptor.parameter_info)
        if plain is not None:
            param._runtime_param = plain


def _leaf(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _leaf(inner[0]) if len(inner) == 1 else None
    if origin is list:
        (inner,) = typing.get_args(annotation) or (None,)
        return _leaf(inner)
    return annotation


def _simple(annotation: Any) -> bool:
    leaf = _leaf(annotation)
    if leaf in (str, Path, int, float, bool):
        return True
    return isinstance(leaf, type) and issubclass(leaf, enum.Enum)


def _convert(annotation: Any, value: Any, param: Any, ctx: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _convert(inner, value, param, ctx)
    if origin is list:
        (inner,) = typing.get_args(annotation)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_convert(inner, item, param, ctx) for item in items]
    if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    text = str(value)
    try:
        if annotation is str:
            return text
        if annotation is Path:
            return Path(text)
        if annotation is bool:
            word = text.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError(text)
        if annotation in (int, float):
            return annotation(text)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            for member in annotation:
                if text in (member.value, member.name):
                    return member
            choices = ", ".join(repr(m.value) for m in annotation)
            raise BadParameter(f"{text!r} is not one of {choices}.", ctx, param)
    except (TypeError, ValueError):
        word = _WORDS.get(annotation, getattr(annotation, "__name__", "a value"))
        raise BadParameter(f"{text!r} is not {word}.", ctx, param) from None
    raise BadParameter(f"{text!r} is not a valid value.", ctx, param)
