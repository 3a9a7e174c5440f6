"""How the command line is put together: commands imported on first use, global options
accepted before and after the command, and help that reads well at 80 columns.

A command is one module under :mod:`exportmon.commands` with a ``register(app)``
function; :class:`LazyGroup` imports that module only when its command is run (or
its help is asked for), so ``exportmon --help`` and a one-file ``rewrite-csv`` do
not pay for the libraries of every other command. The global options (``-c``,
``-v``, ``-q``, ``--log-format``, ``--strict``) are added to every command, so
``exportmon run --once -c f.toml`` means the same as ``exportmon -c f.toml run --once``.
"""

from __future__ import annotations

import copy
import importlib
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer import _click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from exportmon.commands import coercion

#: The parameters of the root command that every command accepts as well.
GLOBAL_OPTIONS = ("config", "verbose", "quiet", "log_format", "strict")
#: The widest example line that fits an 80-column terminal after the help's indent.
EXAMPLE_WIDTH = 76


@dataclass(frozen=True)
class LazyCommand:
    """A command of the CLI: its name, the module that registers it, a one-line summary.

    ``target`` is the name the module registers the command under, when ``name``
    is an alias of it.
    """

    name: str
    #: A module under :mod:`exportmon.commands`, or a full module name (with a dot).
    module: str
    summary: str
    target: str | None = None

    @property
    def module_name(self) -> str:
        return self.module if "." in self.module else f"exportmon.commands.{self.module}"


# --- help formatting ----------------------------------------------------------------


def _clean(text: str | None) -> str | None:
    """Help text without Rich markup escapes (the help is plain text)."""
    return text.replace("\\[", "[") if text else text


def _keep_examples(epilog: str | None) -> str | None:
    """Mark the example paragraphs of an epilog so that they are not rewrapped."""
    if not epilog:
        return epilog
    paragraphs = _clean(epilog).strip("\n").split("\n\n")  # type: ignore[union-attr]
    kept = []
    for paragraph in paragraphs:
        first = paragraph.lstrip("\n").splitlines()[0] if paragraph.strip() else ""
        if re.match(r"\s|exportmon\b|\$ |[a-z-]+ \|", first) or "#" in paragraph:
            lines = re.sub(r" \\\n\s*", " ", textwrap.dedent(paragraph)).splitlines()
            paragraph = "\n".join(["\b", *(_fit_example(line) for line in lines)])
        kept.append(paragraph)
    return "\n\n".join(kept)


def _fit_example(line: str) -> str:
    """An example line with its comment above it when both do not fit in 80 columns."""
    if len(line) <= EXAMPLE_WIDTH:
        return line
    command, sep, comment = line.partition("  # ")
    compact = f"{command.rstrip()}  # {comment.strip()}"
    if sep and len(compact) <= EXAMPLE_WIDTH:
        return compact
    above = f"# {comment.strip()}\n" if sep else ""
    words: list[str] = []
    for word in re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", command):
        if words and words[-1].startswith("-") and " " not in words[-1] and word[0] != "-":
            words[-1] += " " + word  # an option stays with its value
        else:
            words.append(word)
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + len(word) + 3 <= EXAMPLE_WIDTH:
            lines[-1] += " " + word
        else:
            lines.append(word if not lines else "    " + word)
    return above + " \\\n".join(lines)


def _value_label(param: TyperOption) -> str:
    """How a value of ``param`` is shown: its metavar, else its choices or its kind."""
    if param.metavar:
        return param.metavar
    desc = param.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    if desc.is_path:
        return "PATH"
    bare = param.bare_type().removeprefix("list[").removesuffix("]")
    return {"int": "N", "float": "NUMBER", "str": "TEXT"}.get(bare, bare.upper())


def _argument_label(param: TyperArgument) -> str:
    name = (param.metavar or param.name or "").strip("[].").upper()
    return name + ("..." if param.nargs != 1 else "")


def _option_record(param: TyperOption, ctx: _click.Context) -> tuple[str, str] | None:
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names = [_click.formatting.join_options(param.opts)[0]]
    if param.secondary_opts:
        names.append(_click.formatting.join_options(param.secondary_opts)[0])
    label = " / ".join(names)
    if not (param.is_flag or param.count):
        label += " " + _value_label(param)
    return label, _clean(record[1]) or ""


def _argument_record(param: TyperArgument) -> tuple[str, str] | None:
    if param.hidden:
        return None
    return _argument_label(param), _clean(param.help) or ""


if TYPE_CHECKING:
    # The mixin is only ever combined with a click command; to the type checker it
    # is one, so it knows the attributes and methods the mixin relies on.
    _MixinBase = _click.Command
else:
    _MixinBase = object


class PlainHelp(_MixinBase):
    """Help in click's plain layout: option names never cut, paragraphs rewrapped.

    Values are shown as ``PATH`` or ``[text|json]``, flags and counters without a
    value, arguments by name in capitals; the global options get their own section.
    """

    def _polish(self) -> None:
        self.help = _clean(self.help)
        self.epilog = _keep_examples(self.epilog)
        for param in self.params:
            if isinstance(param, TyperOption) and (param.count or param.is_flag):
                param.show_default = False

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        coercion.install(params)  # before any value is converted
        return params

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.params:
            if isinstance(param, TyperArgument) and not param.hidden:
                label = _argument_label(param)
                pieces.append(
                    label
                    if param.required
                    else f"[{label.removesuffix('...')}]" + ("..." if param.nargs != 1 else "")
                )
        return pieces

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        arguments: list[tuple[str, str]] = []
        own: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                record = _argument_record(param)
                target = arguments
            elif isinstance(param, TyperOption):
                record = _option_record(param, ctx)
                target = shared if getattr(param, "is_global", False) else own
            else:  # pragma: no cover - every parameter is a Typer one
                record, target = param.get_help_record(ctx), own
            if record is not None:
                target.append(record)
        for title, records in (
            ("Arguments", arguments),
            ("Options", own),
            ("Global options (also before the command)", shared),
        ):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class Command(PlainHelp, TyperCommand):
    """A command that also takes the global options (see :func:`merge_global_options`)."""

    #: Set by the application: applies the global options given after the command.
    apply_global_options: Callable[[_click.Context, dict[str, Any]], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(*args, **kwargs)
        self._polish()

    def invoke(self, ctx: _click.Context) -> Any:
        given = {}
        for name in GLOBAL_OPTIONS:
            if name in ctx.params:
                value = ctx.params.pop(name)
                if ctx.get_parameter_source(name) != _click.core.ParameterSource.DEFAULT:
                    given[name] = value
        if given and Command.apply_global_options is not None:
            Command.apply_global_options(ctx, given)
        from exportmon.signals import Interrupted, interrupted_by_ctrl_c

        try:
            return super().invoke(ctx)
        except Interrupted:  # stopped at a safe point by SIGINT or SIGTERM
            from exportmon.commands.console import print_note

            print_note("exportmon: stopped; the next run redoes the unfinished work")
            raise typer.Exit(130 if interrupted_by_ctrl_c() else 1) from None


class _CommandApp(typer.Typer):
    """The Typer app a command module registers into: its commands are :class:`Command`."""

    def command(self, name: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(name, **kwargs)


class LazyGroup(PlainHelp, TyperGroup):
    """The root command: imports a command's module only when that command is wanted."""

    #: Filled by the application with its :class:`LazyCommand` entries.
    lazy: ClassVar[dict[str, LazyCommand]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)
        self._polish()

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.lazy)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = self._load(self.lazy[cmd_name])
        return self.commands.get(cmd_name)

    def _load(self, entry: LazyCommand) -> _click.Command:
        module = importlib.import_module(entry.module_name)
        app = _CommandApp(rich_markup_mode=None)
        module.register(app)
        group = typer.main.get_group(app)
        command = group.commands[entry.target or entry.name]
        if entry.target:  # an alias: a copy under its own name
            command = copy.copy(command)
            command.name = entry.name
        command.short_help = command.short_help or entry.summary
        for param in self.params:
            if param.name in GLOBAL_OPTIONS:
                shared = copy.copy(param)
                shared.is_global = True  # type: ignore[attr-defined]
                command.params.append(shared)
        return command

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        try:
            return self._click_resolve_command(ctx, args)
        except _click.exceptions.UsageError as error:
            matches = get_close_matches(args[0], list(self.lazy)) if args else []
            if matches:
                names = ", ".join(repr(m) for m in matches)
                error.message = f"{error.message.rstrip('.')}. Did you mean {names}?"
            raise

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        rows = [(entry.name, entry.summary) for entry in self.lazy.values()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        self.format_commands(ctx, formatter)

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list[Any]:
        from typer._click.shell_completion import CompletionItem

        return [
            CompletionItem(entry.name, help=entry.summary)
            for entry in self.lazy.values()
            if entry.name.startswith(incomplete)
        ]
