"""The actions: one module per thing exportmon does, usable as a library without the CLI.

Each step of an export's way (download, unpack, deliver) is a function that takes
the monitor config, the ledger and the export record, records its success in the
ledger and raises an :class:`~exportmon.errors.ExportmonError` on failure;
:func:`exportmon.actions.steps.attempt` records such a failure once.
"""
