"""The command-line interface: one module per subcommand, kept thin.

Each module parses its arguments and calls the matching action in
:mod:`exportmon.actions`; :mod:`exportmon.commands.app` ties them together.
"""
