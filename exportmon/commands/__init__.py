"""The command-line interface: one module per subcommand, kept thin.

Each module parses its arguments and calls the matching action in
:mod:`exportmon.actions`; :mod:`exportmon.commands.app` ties them together.
:func:`main` is the console script; it answers ``--version`` before importing
anything else, so that scripts asking for it are not kept waiting.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """The ``exportmon`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        from exportmon import __version__

        sys.stdout.write(f"exportmon {__version__}\n")
        return
    from exportmon.commands.app import main as run_app

    run_app(args)
