"""What the pipeline steps (unzip, rewrite-csv, push-ftp) share on the command line.

The options every step has (paths, ``-0``, ``--json``) and :func:`step_run`,
which finds the monitors whose settings and ledgers the step may use, shows
progress on a terminal, and collects the failures of single files so that one
bad file is reported in one line and the others go on (exit 1 at the end).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exportmon.actions.tracking import Owner, Owners
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import progress_wanted, task_advancer, transfer_progress
from exportmon.errors import ConfigError, ExitCode, ExportmonError
from exportmon.log import get_logger
from exportmon.paths import monitors_dir
from exportmon.progress import ProgressFactory
from exportmon.signals import Shutdown, handle_signals

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig

log = get_logger(__name__)

NullOption = Annotated[
    bool, typer.Option("-0", "--null", help="Read and write NUL-separated paths.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Write JSON Lines.")]
SubDirsOption = Annotated[
    bool | None,
    typer.Option(
        "--sub-dirs/--no-sub-dirs",
        help="Put each file in a folder named after its export type "
        "(default: the monitor's sub_dirs, else no).",
        show_default=False,
    ),
]


def paths_argument(what: str) -> object:
    """The PATHS argument of a step: ``what`` it takes, else paths from stdin."""
    return typer.Argument(help=f"{what} (default: paths read from stdin).", show_default=False)


@dataclass
class StepRun:
    """One invocation of a pipeline step."""

    owners: Owners
    #: The monitor chosen with ``--config`` (when exactly one): defaults for paths
    #: outside every monitor folder.
    chosen: MonitorConfig | None
    progress: ProgressFactory | None
    failed: bool = False
    usage_failed: bool = False

    def locate(self, path: Path) -> tuple[Owner | None, MonitorConfig | None]:
        """The monitor folder ``path`` lies in, and the monitor whose settings apply."""
        owner = self.owners.of(path)
        return owner, (owner.monitor if owner else None) or self.chosen

    def report(self, error: ExportmonError) -> None:
        """Log a failure in one line; the step goes on and exits non-zero."""
        log.error("%s", error.one_line())
        self.failed = True
        if error.exit_code == ExitCode.USAGE:
            self.usage_failed = True


@contextlib.contextmanager
def step_run(ctx: typer.Context) -> Iterator[StepRun]:
    """Run a step's work; afterwards exit 0, 1 (a file failed) or 2 (usage or config)."""
    opts = options(ctx)
    monitors = monitors_for_paths(ctx)
    chosen = monitors[0] if opts.configs and len(monitors) == 1 else None
    with (
        handle_signals(Shutdown()),
        Owners(monitors) as owners,
        transfer_progress(progress_wanted(opts.quiet)) as bar,
    ):
        progress: ProgressFactory | None = None
        if bar is not None:
            progress = lambda text, total: task_advancer(bar, text, total)  # noqa: E731
        run = StepRun(owners, chosen, progress)
        yield run
    if run.usage_failed:
        raise typer.Exit(ExitCode.USAGE)
    raise typer.Exit(opts.exit_code(run.failed))


def monitors_for_paths(ctx: typer.Context) -> list[MonitorConfig]:
    """Monitors whose settings and ledgers the steps may use for their paths.

    With ``--config`` these are the selected monitors (a broken one is an error,
    as for every command). Without it, every configured monitor that loads; none
    at all is fine, since the steps also work on files outside any monitor.
    """
    opts = options(ctx)
    if opts.configs:
        return select_monitors(ctx)
    directory = monitors_dir()
    if not (directory.is_dir() and any(directory.glob("*.toml"))):
        return []  # nothing configured: not even the config modules are needed
    from exportmon.config.load import load_monitors

    try:
        monitors, errors = load_monitors(None, strict=opts.strict)
    except ConfigError:
        return []
    for error in errors:
        log.debug("ignoring a monitor config: %s", error.one_line())
    return monitors
