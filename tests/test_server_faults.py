"""Server faults: exportmon recovers from servers that go away, stall or lie, loses
nothing, delivers nothing twice, and reports each outage once.

The scenarios run with `exportmon run` watching (never restarted); they and what
is checked are described in tests/stress/faults.py, whose ``python -m tests.stress
faults --repeat 3`` runs them all repeatedly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fetchkit import export_mail, ftp_monitor
from stress import faults
from watching import wait_for

from cli import run_cli


@pytest.fixture
def fault_world(tmp_path, dovecot, mail_user, https_server, ftps_server, smtp_server, tls_ca):
    world = faults.FaultWorld(
        tmp_path / "world",
        dovecot=dovecot,
        mail_user=mail_user,
        https_server=https_server,
        ftps_server=ftps_server,
        smtp_server=smtp_server,
        tls_ca=tls_ca,
    )
    yield world
    world.close()
    if not dovecot.running:  # a failed scenario must not take the session's Dovecot along
        dovecot.start()


@pytest.mark.parametrize("scenario", faults.SCENARIOS, ids=lambda s: s.__name__)
def test_recovers_while_watching_loses_nothing_and_reports_once(fault_world, scenario):
    result = faults.run_scenario(scenario, fault_world)
    print(f"{result.scenario}: {result.seconds:.1f} s, reported {result.reported}")
    assert result.problems == []
    assert result.recovered
    assert result.lost == result.duplicated == 0
    assert result.reported == 1


def test_an_upload_cut_by_a_server_stop_is_finished_under_the_same_name(
    tmp_path, mail_user, https_server, ftps_server, tls_ca
):
    config, env = ftp_monitor(tmp_path, mail_user, ftps_server, tls_ca, overwrite="timestamp")
    body = b"id\n" + b"".join(b"%d\n" % n for n in range(40_000))
    mail_user.append(export_mail(https_server.add("/e/daily.csv", body), token="t1"))
    ftps_server.slow_uploads(50_000)
    first = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
    )
    folder = ftps_server.home / "in"
    wait_for(lambda: faults.uploading(folder), timeout=30)
    ftps_server.stop()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 1, err.decode()
    (partial,) = folder.glob("*.in_progress")
    ftps_server.slow_uploads(None)
    ftps_server.start()
    again = run_cli("-c", config, "run", "--once", "--retry-failed", env=env)
    assert again.code == 0, again.stderr
    # Before: the retry chose a new time-stamped name and the partial file stayed.
    assert sorted(p.name for p in folder.iterdir()) == [partial.name.removesuffix(".in_progress")]
    assert (folder / partial.name.removesuffix(".in_progress")).read_bytes() == body
    renames = ftps_server.commands_named("RNTO")
    assert [c.code for c in renames] == [250]
