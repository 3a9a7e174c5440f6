"""`exportmon status` end to end: states, Nagios exit codes, JSON and Prometheus output."""

from __future__ import annotations

import json
import re

import pytest
from monitoring import (
    ago,
    backdate_export,
    delivered_export,
    failed_export,
    load,
    open_ledger,
    set_columns,
    start_run,
    write_monitor,
)
from prometheus_client.parser import text_string_to_metric_families

from cli import run_cli
from exportmon.actions.status import status_of

DAILY = '[exports.777]\nexpect_every = "1d"\ngrace = "2h"\n'


def make(tmp_path, name="shop", extra=DAILY, **kwargs):
    path = write_monitor(tmp_path, name, extra=extra, **kwargs)
    monitor = load(path)
    return path, monitor, open_ledger(monitor)


def nagios(*configs):
    args = [part for config in configs for part in ("-c", config)]
    return run_cli(*args, "status", "--nagios")


def test_ok_late_missing_and_failing_give_the_nagios_exit_codes(tmp_path):
    path, _, ledger = make(tmp_path)
    export = delivered_export(ledger, 777, "tok-1")
    backdate_export(ledger, export, hours=2)
    result = nagios(path)
    assert result.code == 0, result.output
    assert result.stdout.startswith("EXPORTMON OK - all ok; last delivered 20")
    assert " | delivered=1;;;0 " in result.stdout
    assert "files=1;;;0 rows=120;;;0" in result.stdout
    assert len(result.stdout.splitlines()) == 1

    backdate_export(ledger, export, hours=23)  # 25 h ago: 1 h late, grace is 2 h
    result = nagios(path)
    assert result.code == 1, result.output
    assert result.stdout.startswith("EXPORTMON WARNING - export 777 did not arrive: expected ")
    assert re.search(r"1h( 1m)? late \(every 1d\)", result.stdout)  # NOW is import time

    backdate_export(ledger, export, hours=2)  # 27 h ago: past grace
    result = nagios(path)
    assert result.code == 2, result.output
    assert result.stdout.startswith("EXPORTMON CRITICAL - export 777 did not arrive")

    delivered_export(ledger, 777, "tok-2")
    failed_export(ledger, 777, "tok-3", error="HTTP 404 Not Found | odd")
    result = nagios(path)
    assert result.code == 2, result.output
    assert result.stdout.startswith(
        "EXPORTMON CRITICAL - export 777 failed at download: HTTP 404 Not Found / odd | "
    )
    assert "failing=1;;;0" in result.stdout and "delivered=2;;;0" in result.stdout


def test_a_later_delivery_clears_an_older_failure(tmp_path):
    path, _, ledger = make(tmp_path)
    failed_export(ledger, 777, "tok-1")
    delivered_export(ledger, 777, "tok-2")
    result = nagios(path)
    assert result.code == 0, result.output


def test_no_data_and_no_expectation_is_unknown(tmp_path):
    path, _, _ = make(tmp_path, extra="")
    result = nagios(path)
    assert result.code == 3, result.output
    assert result.stdout.startswith("EXPORTMON UNKNOWN - no export received yet")


def test_a_monitor_that_never_ran_is_unknown_and_gets_no_ledger(tmp_path):
    path = write_monitor(tmp_path, "fresh", extra=DAILY)
    result = nagios(path)
    assert result.code == 3 and "never ran" in result.stdout
    assert not (tmp_path / "state" / "fresh" / "ledger.sqlite").exists()


def test_an_expected_export_that_never_came_is_missing_since_the_first_run(tmp_path):
    path, _, ledger = make(tmp_path)
    start_run(ledger, ago(days=2))
    result = nagios(path)
    assert result.code == 2 and "export 777 did not arrive" in result.stdout


def test_work_pending_for_over_an_hour_is_a_warning(tmp_path):
    path, _, ledger = make(tmp_path, extra="")
    delivered_export(ledger, 777, "tok-1")
    waiting = ledger.add_export(key="tok-2", kind="link", export_id=777)
    assert nagios(path).code == 0
    set_columns(ledger, "exports", waiting.id, created_at=ago(hours=2))
    result = nagios(path)
    assert result.code == 1 and "unfinished for 2h" in result.stdout


def test_with_several_monitors_the_worst_wins_and_names_its_monitor(tmp_path):
    good, _, ledger = make(tmp_path / "a", "good", extra="")
    delivered_export(ledger, 777, "tok-1")
    bad, _, ledger = make(tmp_path / "b", "bad", extra="")
    failed_export(ledger, 777, "tok-1", step="deliver", error="FTP 550")
    result = nagios(good, bad)
    assert result.code == 2, result.output
    assert result.stdout.startswith(
        "EXPORTMON CRITICAL - bad: export 777 failed at deliver: FTP 550"
    )
    assert nagios(good).code == 0


def test_a_broken_config_is_critical_for_nagios_and_named_by_its_file(tmp_path):
    good, _, ledger = make(tmp_path / "a", "good", extra="")
    delivered_export(ledger, 777, "tok-1")
    broken = tmp_path / "broken.toml"
    broken.write_text("ids = [777]\n[source]\nkind = 'dir'\n")
    result = nagios(good, broken)
    assert result.code == 2, result.output
    assert result.stdout.startswith("EXPORTMON CRITICAL - broken: config does not load: ")
    assert "source.path" in result.stdout
    result = run_cli("-c", good, "-c", broken, "status")
    assert result.code == 2
    assert "good" in result.stdout and "source.path" in result.stderr


def test_json_and_table(tmp_path):
    path, _, ledger = make(tmp_path, extra="", ids=(777, 778))
    delivered_export(ledger, 777, "tok-1", files=(("a.csv", "people", 10, 100),) * 1)
    failed_export(ledger, 778, "tok-2", error="zip is corrupt", step="unzip")
    result = run_cli("-c", path, "status", "--json")
    assert result.code == 0, result.output  # status itself worked; the state is in the data
    data = json.loads(result.stdout)
    assert data["state"] == "error"
    (monitor,) = data["monitors"]
    rows = {row["export_id"]: row for row in monitor["exports"]}
    assert rows[777]["state"] == "ok" and rows[777]["rows_delivered"] == 10
    assert rows[777]["files_delivered"] == 1 and rows[777]["last_success"]
    assert rows[778]["state"] == "error" and rows[778]["last_error"] == "zip is corrupt"
    assert rows[778]["last_error_step"] == "unzip" and rows[778]["failing"] == 1

    table = run_cli("-c", path, "status")
    assert table.code == 0
    assert "export 778 failed at unzip: zip is corrupt" in table.stdout
    assert "Overall: error" in table.stdout


def test_prometheus_output_parses_and_carries_the_figures(tmp_path):
    path, _, ledger = make(tmp_path, ids=(777, 778))
    delivered_export(ledger, 777, "tok-1")
    failed_export(ledger, 778, "tok-2")
    target = tmp_path / "textfile" / "exportmon.prom"
    target.parent.mkdir()
    result = run_cli("-c", path, "status", "--prometheus", "-o", target)
    assert result.code == 0, result.output
    text = target.read_text()
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    key = (("export_id", "777"), ("monitor", "shop"))
    assert samples[("exportmon_state", key)] == 0
    assert samples[("exportmon_state", (("export_id", "778"), ("monitor", "shop")))] == 2
    assert samples[("exportmon_delivered_rows_total", key)] == 120
    assert samples[("exportmon_delivered_files_total", key)] == 1
    assert samples[("exportmon_exports", (*key, ("state", "delivered")))] == 1
    assert samples[("exportmon_exports", (*key, ("state", "failed")))] == 0
    assert samples[("exportmon_delivered_exports_total", key)] == 1
    dest = (("destination", "/srv/in"), ("monitor", "shop"))
    assert samples[("exportmon_destination_delivered_files_total", dest)] == 1
    assert samples[("exportmon_destination_state", dest)] == 0
    assert samples[("exportmon_last_success_timestamp_seconds", key)] > 1e9
    assert samples[("exportmon_monitor_state", (("monitor", "shop"),))] == 2
    assert families["exportmon_exports"].type == "gauge"
    assert families["exportmon_delivered_rows"].type == "counter"
    assert families["exportmon_pending_exports"].type == "gauge"
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert f"# HELP {name} " in text


def test_prometheus_label_values_are_escaped(tmp_path):
    from exportmon.actions.status import ExportStatus, MonitorStatus, summarise
    from exportmon.render.prometheus import prometheus_text

    odd = MonitorStatus('we"ird\\name\n', None, None, "ok", "", "2026-01-01T00:00:00.000000Z")
    odd.exports = [ExportStatus(export_id=1, state="ok", reason="")]
    (family, *_) = text_string_to_metric_families(prometheus_text(summarise([odd])))
    assert family.samples[0].labels["monitor"] == 'we"ird\\name\n'


@pytest.mark.parametrize("options", [("--json", "--nagios"), ("--nagios", "--prometheus")])
def test_output_formats_are_exclusive(tmp_path, options):
    path, _, _ = make(tmp_path)
    result = run_cli("-c", path, "status", *options)
    assert result.code == 2 and "choose one of" in result.stderr


def test_secrets_never_show_in_status(tmp_path):
    extra = (
        '[alerts]\nsmtp_url = "smtps://127.0.0.1:1"\nsmtp_user = "a"\n'
        'smtp_password_env = "SMTP_PASSWORD"\nto = ["ops@example.com"]\n'
    )
    path, monitor, ledger = make(tmp_path, extra=extra)
    failed_export(ledger, 777, "tok-1", error="login as a with S3cret-Smtp-Pw refused")
    env = {"SMTP_PASSWORD": "S3cret-Smtp-Pw"}
    for fmt in ((), ("--json",), ("--nagios",), ("--prometheus",)):
        result = run_cli("-c", path, "status", *fmt, env=env)
        assert "S3cret-Smtp-Pw" not in result.output
    assert "***" in run_cli("-c", path, "status", "--json", env=env).stdout
    assert status_of(monitor, ledger).state == "error"
