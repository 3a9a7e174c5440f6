"""`exportmon demo`: the README's first command, with no account and no network."""

from __future__ import annotations

import json
import time

from cli import run_cli


def test_demo_delivers_locally_and_over_ftp_and_reports(tmp_path):
    started = time.monotonic()
    result = run_cli("demo", "--dir", tmp_path / "demo", "--json")
    took = time.monotonic() - started
    print(f"exportmon demo took {took:.1f} s")
    assert result.code == 0, result.stderr
    outcome = json.loads(result.stdout)
    names = sorted(p.rsplit("/", 1)[1] for p in outcome["delivered"])
    assert names == [
        "777-20261123-060000-organizations.csv",
        "777-20261123-060000-people.csv",
        "777-20261123-060000-sites.csv",
        "778-20261123-060000-requests.csv",
    ]
    uploaded = sorted(p.split("/ftp/", 1)[1] for p in outcome["uploaded"])
    assert uploaded[0] == "in/exports/organizations/777-20261123-060000-organizations.csv"
    assert len(uploaded) == 4
    # Rewritten to semicolons, line breaks inside values replaced.
    people = tmp_path / "demo" / "delivered" / "people" / "777-20261123-060000-people.csv"
    text = people.read_text()
    assert text.startswith("id;name;organization;site;email;job_title")
    assert "Zoë Müller" in text
    sites = tmp_path / "demo" / "delivered" / "sites" / "777-20261123-060000-sites.csv"
    assert "4465 San Felipe Street, Suite 1508" in sites.read_text()
    summary = outcome["summary"]
    assert summary["delivered"] == 2 and summary["failed"] == 1 and summary["archived"] == 2
    states = {e["export_id"]: e["state"] for e in outcome["status"]["exports"]}
    assert states == {777: "error", 778: "ok"}
    alerts = (tmp_path / "demo" / "alerts.jsonl").read_text()
    assert "404" in alerts
    # The local webhook got the failure, a success per delivered export and the summary;
    # the heartbeat service got the run's start and its failure.
    types = sorted(n["type"] for n in outcome["notifications"])
    assert types == ["failure", "info", "success", "success"]
    assert outcome["heartbeat_pings"] == ["/ping/demo/start", "/ping/demo/fail"]
    # The newsletter is still unread in the mailbox; the two delivered mails are archived.
    mailbox = tmp_path / "demo" / "mailbox"
    assert len(list((mailbox / ".Archive" / "cur").iterdir())) == 2
    left = [p.read_bytes() for p in (mailbox / "new").iterdir()]
    assert any(b"This week at Widget" in m for m in left)


def test_demo_table_output_and_refusal_of_a_used_folder(tmp_path):
    result = run_cli("demo", "--dir", tmp_path / "demo")
    assert result.code == 0, result.stderr
    assert "Delivered to the local folder" in result.stdout
    assert "status" in result.stdout and "778" in result.stdout
    assert "A local webhook (Apprise json://) received:" in result.stdout
    assert "serve      # status page: http://127.0.0.1:8580/" in result.stdout
    again = run_cli("demo", "--dir", tmp_path / "demo")
    assert again.code == 2 and "is not empty" in again.stderr
