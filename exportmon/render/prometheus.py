"""The Prometheus exposition of a status: for node_exporter's textfile collector and
the status page's ``/metrics``.

:data:`SERIES` is the list of every series, its type, labels and meaning; the
names are stable and docs/metrics.md lists them (a test keeps the two equal).
Gauges are values that can fall (states, times, what the ledger holds now);
counters come from the ledger's running totals, which pruning never lowers, so
``rate()`` and ``increase()`` mean what they say. The text is generated with
``prometheus_client``, the project's own client library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exportmon.actions.problems import STATE_CODES
from exportmon.actions.status import DestinationStatus, ExportStatus, MonitorStatus, StatusReport
from exportmon.ledger import from_text

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

MONITOR = ("monitor",)
EXPORT = ("monitor", "export_id")
DESTINATION = ("monitor", "destination")


@dataclass(frozen=True)
class Series:
    name: str
    #: ``gauge`` or ``counter`` (a counter's samples end in ``_total``).
    type: str
    labels: tuple[str, ...]
    help: str


SERIES: tuple[Series, ...] = (
    Series(
        "exportmon_monitor_state",
        "gauge",
        MONITOR,
        "Overall state of a monitor: 0 ok, 1 warning, 2 error, 3 unknown.",
    ),
    Series(
        "exportmon_config_error",
        "gauge",
        ("monitor", "config"),
        "1 for a monitor whose config file does not load (the monitor is then in error).",
    ),
    Series("exportmon_alerts_pending", "gauge", MONITOR, "Alerts waiting to be sent."),
    Series(
        "exportmon_state",
        "gauge",
        EXPORT,
        "State of an export id: 0 ok, 1 warning, 2 error, 3 unknown.",
    ),
    Series(
        "exportmon_exports",
        "gauge",
        ("monitor", "export_id", "state"),
        "Exports the ledger holds now, by state: delivered, pending, or failed (and not"
        " delivered since). Falls when old records are pruned.",
    ),
    Series(
        "exportmon_pending_exports",
        "gauge",
        EXPORT,
        "Exports received and not yet delivered (nor failed).",
    ),
    Series(
        "exportmon_last_success_timestamp_seconds",
        "gauge",
        EXPORT,
        "When the last export was delivered.",
    ),
    Series(
        "exportmon_last_arrival_timestamp_seconds",
        "gauge",
        EXPORT,
        "When the last export was received.",
    ),
    Series(
        "exportmon_last_failure_timestamp_seconds",
        "gauge",
        EXPORT,
        "When an export last failed.",
    ),
    Series(
        "exportmon_next_expected_timestamp_seconds",
        "gauge",
        EXPORT,
        "When the next export is expected (export ids with expect_every).",
    ),
    Series(
        "exportmon_delivered_exports",
        "counter",
        EXPORT,
        "Exports delivered, ever.",
    ),
    Series(
        "exportmon_delivered_files",
        "counter",
        EXPORT,
        "Files of delivered exports, ever.",
    ),
    Series(
        "exportmon_delivered_rows",
        "counter",
        EXPORT,
        "Rows of the files of delivered exports, ever.",
    ),
    Series(
        "exportmon_delivered_bytes",
        "counter",
        EXPORT,
        "Bytes of the files of delivered exports, ever.",
    ),
    Series(
        "exportmon_export_failures",
        "counter",
        EXPORT,
        "Failed attempts at a step (download, unzip, rewrite, deliver) of an export, ever.",
    ),
    Series(
        "exportmon_destination_state",
        "gauge",
        DESTINATION,
        "State of a destination: 0 ok, 2 error (the latest delivery of some file failed), "
        "3 unknown (configured, nothing delivered there yet).",
    ),
    Series(
        "exportmon_destination_failing_files",
        "gauge",
        DESTINATION,
        "Files whose latest delivery to the destination failed.",
    ),
    Series(
        "exportmon_destination_last_success_timestamp_seconds",
        "gauge",
        DESTINATION,
        "When a file was last delivered to the destination.",
    ),
    Series(
        "exportmon_destination_last_failure_timestamp_seconds",
        "gauge",
        DESTINATION,
        "When a delivery to the destination last failed.",
    ),
    Series(
        "exportmon_destination_delivered_files",
        "counter",
        DESTINATION,
        "Files delivered to the destination, ever.",
    ),
    Series(
        "exportmon_destination_delivered_bytes",
        "counter",
        DESTINATION,
        "Bytes delivered to the destination, ever.",
    ),
    Series(
        "exportmon_destination_failures",
        "counter",
        DESTINATION,
        "Failed deliveries to the destination, ever.",
    ),
)

BY_NAME = {series.name: series for series in SERIES}

Sample = tuple[tuple[str, ...], float]


def _timestamp(text: str | None) -> float | None:
    return from_text(text).timestamp() if text else None


def _export_key(status: MonitorStatus, row: ExportStatus) -> tuple[str, ...]:
    return (status.monitor, "" if row.export_id is None else str(row.export_id))


#: Per export id: the value of each series (None: no sample).
_PER_EXPORT: dict[str, Callable[[ExportStatus], float | None]] = {
    "exportmon_state": lambda row: STATE_CODES[row.state],
    "exportmon_pending_exports": lambda row: row.pending,
    "exportmon_last_success_timestamp_seconds": lambda row: _timestamp(row.last_success),
    "exportmon_last_arrival_timestamp_seconds": lambda row: _timestamp(row.last_arrival),
    "exportmon_last_failure_timestamp_seconds": lambda row: _timestamp(row.last_failure),
    "exportmon_next_expected_timestamp_seconds": lambda row: _timestamp(row.next_expected),
    "exportmon_delivered_exports": lambda row: row.totals.exports,
    "exportmon_delivered_files": lambda row: row.totals.files,
    "exportmon_delivered_rows": lambda row: row.totals.rows,
    "exportmon_delivered_bytes": lambda row: row.totals.bytes,
    "exportmon_export_failures": lambda row: row.totals.failures,
}

#: Per destination: the value of each series (None: no sample).
_PER_DESTINATION: dict[str, Callable[[DestinationStatus], float | None]] = {
    "exportmon_destination_state": lambda d: STATE_CODES[d.state],
    "exportmon_destination_failing_files": lambda d: d.failing,
    "exportmon_destination_last_success_timestamp_seconds": lambda d: _timestamp(d.last_success),
    "exportmon_destination_last_failure_timestamp_seconds": lambda d: _timestamp(d.last_failure),
    "exportmon_destination_delivered_files": lambda d: d.totals.files,
    "exportmon_destination_delivered_bytes": lambda d: d.totals.bytes,
    "exportmon_destination_failures": lambda d: d.totals.failures,
}


def samples(report: StatusReport) -> dict[str, list[Sample]]:
    """The samples of every series in :data:`SERIES` (label values in its label order)."""
    found: dict[str, list[Sample]] = {series.name: [] for series in SERIES}

    def add(name: str, labels: tuple[str, ...], value: float | None) -> None:
        if value is not None:
            found[name].append((labels, value))

    for status in report.monitors:
        add("exportmon_monitor_state", (status.monitor,), STATE_CODES[status.state])
        if status.config_error is not None:
            add("exportmon_config_error", (status.monitor, status.config or ""), 1)
            continue
        add("exportmon_alerts_pending", (status.monitor,), status.alerts_pending)
        for row in status.exports:
            key = _export_key(status, row)
            for name, value_of in _PER_EXPORT.items():
                add(name, key, value_of(row))
            failed = row.exports - row.delivered - row.pending
            for state, count in (("delivered", row.delivered), ("pending", row.pending)):
                add("exportmon_exports", (*key, state), count)
            add("exportmon_exports", (*key, "failed"), failed)
        for destination in status.destinations:
            key = (status.monitor, destination.destination)
            for name, measure in _PER_DESTINATION.items():
                add(name, key, measure(destination))
    return found


def metric_families(report: StatusReport) -> list[Metric]:
    """The series with samples, as ``prometheus_client`` metric families."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    families: list[Metric] = []
    for name, found in samples(report).items():
        if not found:
            continue
        series = BY_NAME[name]
        kind: Any = CounterMetricFamily if series.type == "counter" else GaugeMetricFamily
        family = kind(name, series.help, labels=list(series.labels))
        for labels, value in found:
            family.add_metric(list(labels), value)
        families.append(family)
    return families


class _Families:
    """A ``prometheus_client`` collector that yields fixed families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def prometheus_text(report: StatusReport, *, openmetrics: bool = False) -> str:
    """The text exposition format (``openmetrics``: the OpenMetrics one, for scrapers
    that ask for it)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(report)))
    generate = generate_openmetrics if openmetrics else generate_latest
    return generate(registry).decode("utf-8")


def series_table() -> str:
    """:data:`SERIES` as the Markdown table of docs/metrics.md (a test keeps them equal)."""
    lines = ["| series | type | labels | meaning |", "|---|---|---|---|"]
    for series in SERIES:
        name = f"{series.name}_total" if series.type == "counter" else series.name
        labels = ", ".join(f"`{label}`" for label in series.labels)
        lines.append(f"| `{name}` | {series.type} | {labels} | {series.help} |")
    return "\n".join(lines) + "\n"
