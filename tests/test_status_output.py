"""`status` and `report` as people read them: at 80 columns and in a pipe, with
`--wide`, and a config that does not load shown as a monitor in error in every format."""

from __future__ import annotations

import json

from monitoring import delivered_export, failed_export, load, open_ledger, write_monitor
from prometheus_client.parser import text_string_to_metric_families
from rich.cells import cell_len

from cli import run_cli
from exportmon.render.prometheus import series_table

NARROW = {"COLUMNS": "80"}
LONG_ERROR = "HTTP 500 " + " ".join(f"word{n}" for n in range(120)) + " THE-END"


def fits(text: str, width: int = 80) -> bool:
    return all(cell_len(line) <= width for line in text.splitlines())


def big_monitor(tmp_path):
    path = write_monitor(tmp_path, "shop", ids=(777, 778))
    ledger = open_ledger(load(path))
    delivered_export(
        ledger, 777, "tok-1", files=(("people.csv", "people", 12474228, 2_000_000_000),)
    )
    failed_export(ledger, 778, "tok-2", error=LONG_ERROR)
    ledger.close()
    return path


def test_status_at_80_columns_never_cuts_a_number_and_says_what_is_left_out(tmp_path):
    path = big_monitor(tmp_path)
    result = run_cli("-c", path, "status", env=NARROW)
    assert result.code == 0, result.output
    out = result.stdout
    assert fits(out), out
    lines = out.splitlines()
    assert lines[0].split() == ["monitor", "export", "state", "reason", "last", "success", "rows"]
    assert "12,474,228" in lines[1]
    assert lines[1].split()[:3] == ["shop", "777", "ok"]
    assert any(line.split()[:3] == ["shop", "778", "error"] for line in lines)
    assert "THE-END" not in out and "…" in out
    assert (
        "To fit 80 columns: 4 column(s) left out (files, pending, last failure, next\n"
        "expected) and long text shortened (…); --wide (or --json) shows everything.\n"
    ) in out

    wide = run_cli("-c", path, "status", "--wide", env=NARROW)
    assert wide.code == 0
    header = wide.stdout.splitlines()[0].split()
    assert header[-7:] == ["files", "rows", "pending", "last", "failure", "next", "expected"]
    assert "export 778 failed at download: " + LONG_ERROR in wide.stdout
    assert "To fit" not in wide.stdout

    data = json.loads(run_cli("-c", path, "status", "--json", env=NARROW).stdout)
    rows = {row["export_id"]: row for row in data["monitors"][0]["exports"]}
    assert rows[778]["reason"] == "export 778 failed at download: " + LONG_ERROR
    assert rows[778]["last_error"] == LONG_ERROR
    assert rows[777]["rows_delivered"] == 12474228


def report_monitor(tmp_path):
    path = write_monitor(tmp_path, "shop", ids=(777, 778))
    ledger = open_ledger(load(path))
    files = (
        ("organizations/777-20261123-060000-organizations.csv", "organizations", 3, 218),
        ("people/777-20261123-060000-people.csv", "people", 12474228, 2_000_000_000),
    )
    delivered_export(ledger, 777, "20261123-060000-export", files=files, destination="ftp://h/in")
    failed_export(ledger, 778, "20261116-060000-export", error=LONG_ERROR)
    ledger.close()
    return path


def test_report_at_80_columns_fits_and_has_the_per_file_section(tmp_path):
    path = report_monitor(tmp_path)
    result = run_cli("-c", path, "report", "--since", "1d", env=NARROW)
    assert result.code == 0, result.output
    out = result.stdout
    assert fits(out), out
    lines = out.splitlines()
    assert lines[0].startswith("exportmon report ")
    assert lines[2] == "Exports"
    assert lines[3].split() == ["received", "export", "download", "outcome", "files", "rows"]
    delivered = lines[4].split()
    assert delivered[2:] == ["shop/777", "20261123-0…-export.zip", "delivered", "2", "12,474,231"]
    assert lines[5].split()[2:5] == ["shop/778", "20261116-0…-export.zip", "failed"]
    assert lines[6].startswith("    ↳ download: HTTP 500 word0 word1 ")
    assert lines[8].endswith("…") and "THE-END" not in out
    files_at = lines.index("Files")
    assert lines[files_at + 1].split() == [
        "export",
        "file",
        "type",
        "rows",
        "size",
        "delivered",
        "to",
    ]
    people = lines[files_at + 3].split()
    assert people[0] == "shop/777" and people[2:5] == ["people", "12,474,228", "2.0"]
    assert people[1].startswith("people/") and people[1].endswith("people.csv")
    assert "Destinations" in lines
    assert "2 exports: 1 delivered, 1 failed, 0 pending; 2 files, 12,474,231 rows, 2.0 GB" in out
    assert (
        "5 column(s) left out (size, destinations, delivered, duration, download)"
        in out.replace("\n", " ")
    )

    wide = run_cli("-c", path, "report", "--since", "1d", "--wide", env=NARROW)
    assert wide.code == 0
    assert "people/777-20261123-060000-people.csv" in wide.stdout
    assert "ftp://h/in" in wide.stdout.splitlines()[4]
    assert LONG_ERROR in wide.stdout and "To fit" not in wide.stdout

    markdown = run_cli("-c", path, "report", "--since", "1d", "--markdown", env=NARROW)
    assert "## Files" in markdown.stdout
    assert (
        "| shop/777 | 20261123-060000-export.zip | people/777-20261123-060000-people.csv"
        " | people | 12,474,228 | 2.0 GB | ftp://h/in |"
    ) in markdown.stdout


def test_each_problem_of_a_config_is_its_own_line(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(
        "ids = [0]\n[source]\nkind = 'dir'\n[[deliver]]\nurl = '/srv/in'\nretries = -1\n"
    )
    table = run_cli("-c", broken, "status", env=NARROW)
    assert table.code == 2
    errors = [line for line in table.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 3, table.stderr
    assert all(line.startswith(f"ERROR {broken}: ") for line in errors)
    assert "problems:" not in table.stderr
    shown = json.loads(run_cli("-c", broken, "status", "--json").stdout)["monitors"][0]
    assert len(shown["config_errors"]) == 3 and "3 problems" in shown["config_error"]


def test_a_config_that_does_not_load_is_a_monitor_in_error_in_every_format(tmp_path):
    good = write_monitor(tmp_path / "a", "good", extra="")
    ledger = open_ledger(load(good))
    delivered_export(ledger, 777, "tok-1")
    ledger.close()
    typo = tmp_path / "typo.toml"
    typo.write_text("ids = [777]\n[source]\nkind = 'dir'\n")
    missing = tmp_path / "missing.toml"
    configs = ["-c", good, "-c", typo, "-c", missing]

    table = run_cli(*configs, "status", env=NARROW)
    assert table.code == 2
    assert fits(table.stdout), table.stdout
    rows = [line.split()[:3] for line in table.stdout.splitlines()]
    assert ["good", "777", "ok"] in rows
    assert ["typo", "(config)", "error"] in rows
    assert ["missing", "(config)", "error"] in rows
    # (joined: where the line wraps depends on the length of pytest's tmp_path)
    assert "Overall: error - typo: config does not load: " in " ".join(table.stdout.split())
    assert "source.path" in table.stderr and "config file not found" in table.stderr

    result = run_cli(*configs, "status", "--json")
    assert result.code == 2
    data = json.loads(result.stdout)
    assert data["state"] == "error"
    by_name = {m["monitor"]: m for m in data["monitors"]}
    assert by_name["good"]["state"] == "ok"
    assert by_name["typo"]["state"] == "error" and by_name["typo"]["config"] == str(typo)
    assert "source.path" in by_name["typo"]["config_error"]
    assert "config file not found" in by_name["missing"]["config_error"]

    prom = run_cli(*configs, "status", "--prometheus")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.stdout)
        for s in family.samples
    }
    assert samples[("exportmon_monitor_state", (("monitor", "typo"),))] == 2
    assert samples[("exportmon_monitor_state", (("monitor", "good"),))] == 0
    assert samples[("exportmon_config_error", (("config", str(typo)), ("monitor", "typo")))] == 1

    nagios = run_cli(*configs, "status", "--nagios")
    assert nagios.code == 2
    assert nagios.stdout.startswith("EXPORTMON CRITICAL - typo: config does not load: ")

    only_broken = run_cli("-c", typo, "status", env=NARROW)
    assert only_broken.code == 2
    assert ["typo", "(config)", "error"] in [
        line.split()[:3] for line in only_broken.stdout.splitlines()
    ]


def test_counters_never_fall_when_the_ledger_is_pruned(tmp_path):
    path = write_monitor(tmp_path, "shop")
    ledger = open_ledger(load(path))
    delivered_export(ledger, 777, "tok-1")
    delivered_export(ledger, 777, "tok-2")
    ledger.prune("9999-01-01T00:00:00.000000Z")
    ledger.close()
    prom = run_cli("-c", path, "status", "--prometheus")
    families = {f.name: f for f in text_string_to_metric_families(prom.stdout)}
    key = {"monitor": "shop", "export_id": "777"}
    files = [s for s in families["exportmon_delivered_files"].samples if s.labels == key]
    assert [s.value for s in files] == [2]
    exports = {s.labels["state"]: s.value for s in families["exportmon_exports"].samples}
    assert exports == {"delivered": 0, "pending": 0, "failed": 0}


def test_the_metrics_page_lists_every_series():
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert series_table() in page
