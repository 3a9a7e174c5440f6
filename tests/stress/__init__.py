"""Reliability suites: crash safety (exactly once) and server faults, at full size.

The quick versions run in CI as ``tests/test_crash_safety.py`` and
``tests/test_server_faults.py``; the full-size runs are started by hand (see the
README's "Reliability" section)::

    .venv/bin/python -m tests.stress crash --runs 200 --mails 36
    .venv/bin/python -m tests.stress faults --repeat 3

Both start their own real servers on 127.0.0.1 (Dovecot, HTTPS, FTPS, SMTP), as
the pytest fixtures do, and print a table of figures.
"""
