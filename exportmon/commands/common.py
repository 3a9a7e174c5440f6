"""What every command shares: the global options and loading the selected monitors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from exportmon.errors import ConfigError, ExitCode
from exportmon.log import get_logger

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig

log = get_logger(__name__)


@dataclass
class GlobalOptions:
    """The global options of one invocation, given before or after the command."""

    configs: list[Path] = field(default_factory=list)
    verbosity: int = 0
    quiet: bool = False
    log_format: str = "text"
    strict: bool = False
    #: Set when a selected config could not be loaded; the command ends with exit 2.
    config_failed: bool = False

    def exit_code(self, work_failed: bool) -> ExitCode:
        """The exit code for a command that finished its work."""
        if self.config_failed:
            return ExitCode.USAGE
        return ExitCode.FAILED if work_failed else ExitCode.OK


def options(ctx: typer.Context) -> GlobalOptions:
    """The global options of this invocation."""
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    return root.obj


def select_monitors(ctx: typer.Context) -> list[MonitorConfig]:
    """The monitors chosen with ``--config`` (or all configured ones), validated.

    A broken config is reported (one line) and skipped so the others still run;
    the command then exits 2. When none is usable, :class:`ConfigError` is raised.
    """
    from exportmon.config.load import load_monitors

    opts = options(ctx)
    monitors, errors = load_monitors(opts.configs or None, strict=opts.strict)
    for error in errors:
        for line in error.lines():
            log.error("%s", line)
        opts.config_failed = True
    if not monitors:
        if errors:
            raise typer.Exit(ExitCode.USAGE)
        raise ConfigError("no monitor to work on")
    return monitors
