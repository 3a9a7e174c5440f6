"""Hostile and broken input: the cases, table-driven, run end to end by ``test_hostile.py``.

Each area has its own module of :class:`~hostile.cases.Case` definitions: ``mails``,
``zips``, ``csvs`` and ``configs``. ``python -m tests.hostile`` runs them all and prints
how many were tried and passed (the README's reliability table).
"""
