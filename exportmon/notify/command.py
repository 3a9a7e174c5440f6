"""The ``command`` channel: ``[alerts] command`` run with the notice's details.

The command runs through ``/bin/sh -c`` with the details as JSON on stdin and as
``EXPORTMON_*`` environment variables (``EXPORTMON_KIND``, ``EXPORTMON_SUBJECT``,
``EXPORTMON_EXPORT_ID``, ...). It never receives a secret: the variables that
hold configured secrets are removed from its environment, and every value is
redacted.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exportmon import redact
from exportmon.config.schema import MonitorConfig
from exportmon.errors import AlertError
from exportmon.notify import Channel, Notice

COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class CommandChannel:
    """Runs ``[alerts] command`` once per notice."""

    command: str
    monitor: MonitorConfig
    name: str = "command"
    label: str = "the alert command"

    def send(self, notice: Notice) -> None:
        run_command(self.command, notice.details, self.monitor)


def channels(monitor: MonitorConfig) -> list[Channel]:
    """The command channel, when ``[alerts] command`` is set."""
    if monitor.alerts.command:
        return [CommandChannel(monitor.alerts.command, monitor)]
    return []


def secret_variables(monitor: MonitorConfig) -> set[str]:
    """The environment variables the config names as holding secrets (every
    ``*_env`` of a field marked secret, see :meth:`MonitorConfig.secret_sources`)."""
    return {source.env for source in monitor.secret_sources() if source.env}


def command_environment(details: Mapping[str, Any], monitor: MonitorConfig) -> dict[str, str]:
    """The child's environment: ours without the secret variables, plus ``EXPORTMON_*``."""
    hidden = secret_variables(monitor)
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in hidden and not name.startswith("EXPORTMON_ALERT")
    }
    for key, value in details.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        name = "EXPORTMON_" + "".join(c if c.isalnum() else "_" for c in key).upper()
        environment[name] = redact.redact(str(value))
    return environment


def run_command(command: str, details: Mapping[str, Any], monitor: MonitorConfig) -> None:
    """Run ``command`` with ``details`` as JSON on stdin and in the environment.

    Raises :class:`AlertError` when it cannot start, times out or exits non-zero.
    """
    payload = redact.redact(json.dumps(details, default=str, ensure_ascii=False, indent=2))
    try:
        completed = subprocess.run(
            ["/bin/sh", "-c", command],
            input=(payload + "\n").encode("utf-8"),
            capture_output=True,
            env=command_environment(details, monitor),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AlertError(
            f"alert command did not finish within {COMMAND_TIMEOUT:.0f} s", retryable=True
        ) from None
    except OSError as exc:
        raise AlertError(f"alert command could not be started: {exc.strerror}") from None
    if completed.returncode != 0:
        lines = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = redact.redact(lines[-1]) if lines else "no error output"
        raise AlertError(f"alert command exited with status {completed.returncode}: {reason}")
