"""Several [[deliver]] destinations per monitor, as a user runs them: local folders and the
real pyftpdlib FTP/FTPS servers in one run, a failing destination that holds back no
other, completion signals (temporary names, triggers, manifests) in the right order and
exactly once across a crash, `push-ftp`/`push` to any number of URLs with one login per
destination, and ad-hoc pushes that settle nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fetchkit import export_mail, write_config
from gem_output import GEM_ZIP, NAMES
from watching import wait_for

from cli import run_cli
from exportmon.actions.deliver import deliver_export
from exportmon.actions.unzip import unpack_export
from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.deliver import Outgoing
from exportmon.deliver.local import LocalDestination
from exportmon.deliver.signals import TempNaming
from exportmon.errors import UsageError
from exportmon.ledger import Ledger
from servers.ftp import FtpServer

FILES = sorted(NAMES.values())


def ftp_url(server: FtpServer, folder: str = "in") -> str:
    return f"{'ftps' if server.tls else 'ftp'}://127.0.0.1:{server.port}/{folder}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def monitor_config(
    tmp_path: Path, gem_fixtures: Path, destinations: list[dict], **extra: object
) -> Path:
    """A monitor reading mails from a folder, one export mail with the gem's zip in it."""
    mails = tmp_path / "mails"
    mails.mkdir(exist_ok=True)
    zipped = (gem_fixtures / GEM_ZIP).read_bytes()
    (mails / "a.eml").write_bytes(export_mail(attachments=[(GEM_ZIP, zipped)]))
    return write_config(
        tmp_path,
        {
            "ids": [777],
            "root": str(tmp_path / "state"),
            "source": {"kind": "dir", "path": str(mails), "archive": ""},
            "deliver": destinations,
            **extra,
        },
    )


def ledger_of(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path / "state" / "ledger.sqlite")


def temp_names(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if "in_progress" in p.name or p.name.startswith(".")]


# --- several destinations in one run -------------------------------------------------------


def test_one_run_delivers_to_folders_ftp_and_ftps_with_their_signals(
    tmp_path, gem_fixtures, ftp_server, ftps_server, tls_ca
):
    a, b = tmp_path / "a", tmp_path / "b"
    config = monitor_config(
        tmp_path,
        gem_fixtures,
        [
            {"url": str(a), "trigger": "file", "trigger_content": True},
            {"url": f"file://{b}", "temp_prefix": ".", "temp_suffix": "", "manifest": "json"},
            {
                "url": ftp_url(ftp_server),
                "user": ftp_server.user,
                "password_env": "FTP_PASS",
                "trigger": "export",
                "manifest": "csv",
            },
            {
                "url": ftp_url(ftps_server, "deep/in"),
                "user": ftps_server.user,
                "password_env": "FTPS_PASS",
                "ca_file": str(tls_ca.ca_file),
                "temp_dir": "/tmp-up",
            },
        ],
    )
    env = {"FTP_PASS": ftp_server.password, "FTPS_PASS": ftps_server.password}
    result = run_cli("-c", config, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    with ledger_of(tmp_path) as ledger:
        export = ledger.exports()[0]
        assert export.state == "delivered"
        files = ledger.files(export.id)
    rows = {f.name: f.rows for f in files}
    for folder in (a, b, ftp_server.home / "in", ftps_server.home / "deep/in"):
        for file in files:
            assert (folder / file.name).read_bytes() == Path(file.path).read_bytes(), folder
        assert temp_names(folder) == []
    # Per-file triggers beside the files, holding rows and SHA-256.
    organizations = NAMES["organizations"]
    trigger = (a / f"{organizations}.done").read_text()
    assert f"rows={rows[organizations]}\n" in trigger
    assert f"sha256={sha(a / organizations)}\n" in trigger
    assert sorted(p.name for p in a.iterdir()) == sorted(FILES + [f"{n}.done" for n in FILES])
    # The JSON manifest: every file with size, rows and SHA-256.
    manifest = json.loads((b / "20130923-072313-export.manifest.json").read_text())
    assert manifest["export_id"] == 777
    assert {f["name"]: (f["bytes"], f["rows"], f["sha256"]) for f in manifest["files"]} == {
        name: ((b / name).stat().st_size, rows[name], sha(b / name)) for name in FILES
    }
    # The CSV manifest and the export's trigger on the FTP server.
    ftp_in = ftp_server.home / "in"
    table = list(csv.DictReader(io.StringIO((ftp_in / "20130923-072313-export.manifest.csv")
                                            .read_text())))  # fmt: skip
    assert [(r["name"], r["sha256"]) for r in table] == [(n, sha(ftp_in / n)) for n in FILES]
    assert [int(r["rows"]) for r in table] == [rows[n] for n in FILES]
    assert (ftp_in / "20130923-072313-export.done").read_bytes() == b""
    # Uploaded into the temporary folder on the server, then moved out of it.
    stored = [c.path for c in ftps_server.commands_named("STOR")]
    assert stored and all(p.startswith("/tmp-up/") for p in stored)
    assert not [p for p in (ftps_server.home / "tmp-up").rglob("*") if p.is_file()]
    # The plain FTP server is warned about once, where it is used.
    assert result.stderr.count("is ftp://, not ftps://") == 1
    status = run_cli("-c", config, "status", "--json")
    shown = {d["destination"] for d in json.loads(status.stdout)["monitors"][0]["destinations"]}
    assert {f"local:{a}", f"local:{b}", ftp_url(ftp_server), ftp_url(ftps_server, "deep/in")} <= (
        shown
    )


def test_a_failing_destination_holds_back_no_other_and_is_one_error_line(tmp_path, gem_fixtures):
    good, bad = tmp_path / "good", tmp_path / "bad"
    bad.write_text("a file where the folder should be")
    alert = tmp_path / "alert.json"
    config = monitor_config(
        tmp_path,
        gem_fixtures,
        [{"url": str(bad)}, {"url": str(good), "manifest": "json"}],
        alerts={"command": f"cat > {alert}"},
    )
    env = {"COLUMNS": "80"}
    first = run_cli("-c", config, "run", "--once", env=env)
    assert first.code == 1
    assert sorted(p.name for p in good.iterdir()) == sorted(
        [*FILES, "20130923-072313-export.manifest.json"]
    )
    errors = [line for line in first.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, first.stderr  # one per export and destination
    assert str(bad) in errors[0] and "3 more file(s) not delivered there" in errors[0]
    assert str(tmp_path / "state") not in errors[0]  # no long source paths
    with ledger_of(tmp_path) as ledger:
        assert ledger.exports()[0].state == "unpacked"
    status = run_cli("-c", config, "status", "--json", env=env)
    monitor = json.loads(status.stdout)["monitors"][0]
    states = {d["destination"]: d["state"] for d in monitor["destinations"]}
    assert states == {f"local:{bad}": "error", f"local:{good}": "ok"}
    # The failure (and so its alert) says where the export stands at each destination.
    (problem,) = monitor["problems"]
    progress = problem["details"]["destination_states"]
    assert progress[f"local:{good}"] == "delivered"
    assert progress[f"local:{bad}"].startswith("failed: cannot copy")
    sent = json.loads(alert.read_text())
    assert sent["destination_states"] == progress
    metrics = run_cli("-c", config, "status", "--prometheus").stdout.splitlines()
    series = {
        line.split('destination="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics
        if line.startswith("exportmon_destination_state{")
    }
    assert series == {f"local:{bad}": 2, f"local:{good}": 0}
    table = run_cli("-c", config, "status", env=env)
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    (bad_row,) = [line for line in lines if "bad " in line and line.startswith("777")]
    (good_row,) = [line for line in lines if "good " in line and line.startswith("777")]
    assert " error " in bad_row and " ok " in good_row
    # Fixed: the retry delivers to the bad one only; the good one is not written again.
    bad.unlink()
    before = (good / FILES[0]).stat().st_mtime_ns
    again = run_cli("-c", config, "run", "--once", "--retry-failed", env=env)
    assert again.code == 0, again.stderr
    assert sorted(p.name for p in bad.iterdir()) == FILES
    assert (good / FILES[0]).stat().st_mtime_ns == before
    with ledger_of(tmp_path) as ledger:
        assert ledger.exports()[0].state == "delivered"
        done = ledger.deliveries(destination=f"local:{good}", state="done")
        assert len(done) == 5  # four files and the manifest, once each


# --- signals: order, atomicity, crash --------------------------------------------------


class _Monitor:
    """An unpacked export in a ledger, delivered by deliver_export as `run` does."""

    def __init__(self, tmp_path: Path, gem_fixtures: Path) -> None:
        self.root = tmp_path / "state"
        (self.root / "downloads").mkdir(parents=True)
        download = self.root / "downloads" / GEM_ZIP
        download.write_bytes((gem_fixtures / GEM_ZIP).read_bytes())
        self.ledger = Ledger.open(self.root / "ledger.sqlite")
        mail = self.ledger.add_mail(source="t", uid="1")
        export = self.ledger.add_export(
            key="k", kind="link", mail_id=mail.id, export_id=2, file_name=GEM_ZIP
        )
        export = self.ledger.advance_export(export.id, "downloaded", download_path=str(download))
        self.export = export

    def monitor(self, *destinations: DestinationConfig) -> MonitorConfig:
        config = MonitorConfig(name="t", ids=[2], root=str(self.root))
        config.destinations = list(destinations)
        return config


@pytest.fixture
def made(tmp_path, gem_fixtures):
    found = _Monitor(tmp_path, gem_fixtures)
    yield found
    found.ledger.close()


def test_triggers_follow_their_files_and_the_manifest_comes_last(made, tmp_path):
    out = tmp_path / "out"
    config = DestinationConfig(url=str(out), trigger="file", manifest="csv", order=["sites"])
    monitor = made.monitor(config)
    export = unpack_export(monitor, made.ledger, made.export)
    assert deliver_export(monitor, made.ledger, export).state == "delivered"
    targets = [d.target for d in made.ledger.deliveries(export_row=export.id)]
    sites = NAMES["sites"]
    rest = sorted(n for n in FILES if n != sites)
    expected = [sites, f"{sites}.done"]
    for name in rest:
        expected += [name, f"{name}.done"]
    assert targets == [*expected, "20130923-072313-export.manifest.csv"]
    # Signals are recorded, but not counted as delivered files.
    (state,) = made.ledger.destination_states()
    assert state.files_delivered == 4
    # Delivering again writes nothing.
    again = made.ledger.export(export.id)
    assert deliver_export(monitor, made.ledger, again).state == "delivered"
    assert len(made.ledger.deliveries(export_row=export.id)) == 9


@pytest.mark.parametrize("how", ["suffix", "prefix", "relative dir", "absolute dir"])
def test_a_partial_file_never_has_its_final_name(tmp_path, how):
    out = tmp_path / "out"
    naming, temporary = {
        "suffix": (TempNaming(), out / "big.csv.in_progress"),
        "prefix": (TempNaming(prefix=".", suffix=""), out / ".big.csv"),
        "relative dir": (TempNaming(dir=".spool"), out / ".spool" / "big.csv.in_progress"),
        "absolute dir": (
            TempNaming(dir=str(tmp_path / "spool"), suffix=""),
            tmp_path / "spool" / "big.csv",
        ),
    }[how]
    source = tmp_path / "big.csv"
    source.write_bytes(os.urandom(5_000_000))
    seen = []

    def progress(text, total):
        def advance(size):
            seen.append(((out / "big.csv").exists(), temporary.exists()))

        return advance, lambda: None

    destination = LocalDestination(out, temp=naming)
    destination.put(Outgoing.from_path(source, "big.csv"), "big.csv", progress=progress)
    assert len(seen) >= 4 and all(pair == (False, True) for pair in seen)
    assert (out / "big.csv").read_bytes() == source.read_bytes()
    assert not temporary.exists()


def test_temporary_naming_is_checked():
    with pytest.raises(UsageError, match="final names"):
        TempNaming(suffix="", prefix="")
    with pytest.raises(UsageError, match=r"\.\."):
        TempNaming(dir="../x")
    assert TempNaming(dir="/spool").temporary("sites/a.csv") == "/spool/sites/a.csv.in_progress"
    assert TempNaming(prefix=".", suffix="").temporary("sites/a.csv") == "sites/.a.csv"


def test_bad_signal_settings_are_one_config_line(tmp_path, gem_fixtures):
    config = monitor_config(
        tmp_path, gem_fixtures, [{"url": str(tmp_path / "o"), "trigger_name": "{nope}.ok"}]
    )
    result = run_cli("-c", config, "status")
    assert result.code == 2 or "unknown placeholder {nope}" in result.output
    assert "unknown placeholder {nope}" in result.output


@pytest.mark.parametrize("point", ["deliver.signals", "deliver.placed:5"])
def test_a_crash_between_the_data_and_the_signals_writes_them_on_resume(
    tmp_path, gem_fixtures, point
):
    out = tmp_path / "out"
    config = monitor_config(
        tmp_path,
        gem_fixtures,
        [{"url": str(out), "trigger": "export", "trigger_content": True, "manifest": "json"}],
    )
    killed = run_cli("-c", config, "run", "--once", env={"EXPORTMON_TEST_KILL_AT": point})
    assert killed.code == -9, killed.stderr
    # The data is there; neither the trigger nor the manifest came before all of it.
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".csv") == FILES
    assert not (out / "20130923-072313-export.manifest.json").exists()
    resumed = run_cli("-c", config, "run", "--once")
    assert resumed.code == 0, resumed.stderr
    trigger = (out / "20130923-072313-export.done").read_text()
    assert trigger.count("sha256=") == 4
    assert json.loads((out / "20130923-072313-export.manifest.json").read_text())["files"]
    assert temp_names(out) == []
    with ledger_of(tmp_path) as ledger:
        done = ledger.deliveries(state="done")
        assert sorted(d.target for d in done) == sorted(
            [*FILES, "20130923-072313-export.done", "20130923-072313-export.manifest.json"]
        )  # each file and each signal exactly once
        assert ledger.exports()[0].state == "delivered"


# --- push-ftp / push --------------------------------------------------------------------


@pytest.fixture
def loose_files(tmp_path, gem_fixtures) -> list[Path]:
    import zipfile

    folder = tmp_path / "loose"
    with zipfile.ZipFile(gem_fixtures / GEM_ZIP) as archive:
        archive.extractall(folder)
    return sorted(folder / name for name in FILES)


@pytest.mark.parametrize("command", ["push-ftp", "push"])
def test_push_to_repeated_urls_and_folders_with_one_login_each(
    command, tmp_path, loose_files, ftp_server, ftps_server, tls_ca
):
    env = {"P": ftp_server.password}
    args = [command, "--to", tmp_path / "x", "--to", tmp_path / "y"]
    other = f"ftp://{ftp_server.user}@127.0.0.1:{ftp_server.port}/other"
    args += ["--url", ftp_url(ftp_server), "--url", other]
    args += ["--user", ftp_server.user, "--password-env", "P"]
    result = run_cli(*args, *loose_files, env=env)
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 16
    home = ftp_server.home
    for folder in (tmp_path / "x", tmp_path / "y", home / "in", home / "other"):
        assert sorted(p.name for p in folder.iterdir()) == FILES
    # Two destinations on that server, each one login (ftputil's two connections).
    assert len(ftp_server.commands_named("USER")) == 2 * 2


def test_push_help_and_per_kind_options(tmp_path):
    assert "--url" in run_cli("push", "--help").stdout
    source = tmp_path / "x.csv"
    source.write_text("x")
    for args, words in [
        (["--to", tmp_path, "--ssh-key", tmp_path / "k"], "--ssh-key needs an sftp:// --url"),
        (["--ssh-key", tmp_path / "k"], "--ssh-key needs --url"),
        (["--trigger", "file"], "--trigger needs --to or --url"),
        (["--url", "https://h/in", "--manifest", "json"], "--manifest needs --to or an ftp://"),
        (["--to", tmp_path, "--reference", "/id"], "--reference needs an https://"),
        (["--to", tmp_path, "--temp-suffix", ""], "--temp-suffix: a file would be written"),
        (["--to", tmp_path, "--trigger-content"], "--trigger-content: needs trigger"),
        (["--to", tmp_path, "--trigger", "file", "--trigger-name", "a/b"], "--trigger-name: must"),
        (
            ["--to", tmp_path, "--trigger", "file", "--trigger-name", "{nme}"],
            "--trigger-name: unknown placeholder {nme}",
        ),
        (["--url", "https://h/in", "--reference", "(x"], "--reference: "),
        (["--url", "ftp://h/in", "--ssh-key", tmp_path / "k"], "--ssh-key needs an sftp://"),
        (["--url", "ftp://h/in", "--method", "PUT"], "--method needs an https://"),
        (["--url", "ftp://h/in", "--dir", "x"], "not both"),
        (["--url", "ftp://u:pw@h/in"], "does not belong in a destination URL"),
    ]:
        result = run_cli("push", *args, source)
        assert result.code == 2, result.output
        assert words in result.stderr, result.stderr


def test_a_refused_login_is_one_line_and_not_retried(tmp_path, loose_files, ftp_server):
    result = run_cli(
        "push-ftp", "--url", ftp_url(ftp_server), "--user", ftp_server.user,
        "--password-env", "P", *loose_files, env={"P": "wrong"},
    )  # fmt: skip
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "login refused" in errors[0], result.stderr
    assert "3 more file(s) not delivered there" in errors[0]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "is ftp://, not ftps://" in warnings[0]
    assert len([c for c in ftp_server.commands_named("PASS") if c.code == 530]) == 1


def test_a_dead_server_is_retried_once_for_the_batch(tmp_path, loose_files):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(
        "push-ftp", "--url", f"ftps://127.0.0.1:{port}/in", "--retries", "1", *loose_files,
    )  # fmt: skip
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert len([line for line in lines if line.startswith("WARNING")]) == 1, result.stderr
    (error,) = [line for line in lines if line.startswith("ERROR")]
    assert "after 2 attempts" in error and "3 more file(s)" in error
    assert "retried later" not in result.stderr


def test_a_dead_server_costs_one_round_of_retries_per_run_not_per_export(tmp_path, gem_fixtures):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    dead = f"ftps://127.0.0.1:{port}/in"
    entries = [{"url": dead, "retries": 1}, {"url": str(out)}]
    config = monitor_config(tmp_path, gem_fixtures, entries)
    zipped = (gem_fixtures / GEM_ZIP).read_bytes()
    (tmp_path / "mails" / "b.eml").write_bytes(
        export_mail(token="tok-0002", attachments=[("20130924-072313-export.zip", zipped)])
    )
    result = run_cli("-c", config, "run", "--once", env={"COLUMNS": "80"})
    assert result.code == 1
    lines = result.stderr.splitlines()
    retried = [line for line in lines if line.startswith("WARNING") and "retrying" in line]
    assert len(retried) == 1, result.stderr
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 2 and all(f"127.0.0.1:{port}" in line for line in errors), errors
    assert "not tried again for this export" in errors[1]
    # The folder got both exports.
    assert len([p for p in out.iterdir() if p.suffix == ".csv"]) == 4


# --- 14.11: an ad-hoc push settles nothing -------------------------------------------------


def test_an_ad_hoc_push_inside_a_monitor_settles_nothing(tmp_path, gem_fixtures, ftp_server):
    out = tmp_path / "out"
    config = monitor_config(tmp_path, gem_fixtures, [{"url": str(out)}])
    fetched = run_cli("-c", config, "fetch")
    assert fetched.code == 0, fetched.stderr
    unzipped = run_cli("-c", config, "unzip", input=fetched.stdout)
    assert unzipped.code == 0, unzipped.stderr
    pushed = run_cli(
        "-c", config, "push-ftp", "--url", ftp_url(ftp_server), "--user", ftp_server.user,
        "--password-env", "P", input=unzipped.stdout, env={"P": ftp_server.password},
    )  # fmt: skip
    assert pushed.code == 0, pushed.stderr
    assert sorted(p.name for p in (ftp_server.home / "in").iterdir()) == FILES
    with ledger_of(tmp_path) as ledger:
        assert ledger.exports()[0].state == "unpacked"  # the monitor's folder has nothing yet
        assert {d.destination for d in ledger.deliveries()} == {ftp_url(ftp_server)}
    status = run_cli("-c", config, "status", "--json")
    shown = json.loads(status.stdout)["monitors"][0]["destinations"]
    assert {d["destination"]: d["configured"] for d in shown} == {
        ftp_url(ftp_server): False,
        f"local:{out}": True,
    }
    assert "(ad hoc)" in run_cli("-c", config, "status", env={"COLUMNS": "80"}).stdout
    # The monitor's own destination gets the files on the next run, which settles it.
    run = run_cli("-c", config, "run", "--once")
    assert run.code == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == FILES
    with ledger_of(tmp_path) as ledger:
        assert ledger.exports()[0].state == "delivered"


def test_dry_run_describes_each_destination(tmp_path, gem_fixtures, ftp_server):
    config = monitor_config(
        tmp_path,
        gem_fixtures,
        [
            {"url": str(tmp_path / "o"), "temp_prefix": ".", "trigger": "file"},
            {"url": ftp_url(ftp_server), "manifest": "json", "temp_dir": "/spool"},
        ],
    )
    result = run_cli("-c", config, "run", "--once", "--dry-run", env={"COLUMNS": "80"})
    assert result.code == 0, result.stderr
    text = " ".join(result.output.split())
    assert f"would deliver to {tmp_path / 'o'} (as .<name>.in_progress, then renamed" in text
    assert "a trigger {name}.done after each file" in text
    assert "in /spool, then moved out" in text and "a json manifest" in text
    assert not (tmp_path / "o").exists()


def test_push_to_a_folder_and_sftp_with_a_pinned_host_key(tmp_path, loose_files, sshd):
    inbox = sshd.user_folder("in")
    result = run_cli(
        "push", "--to", tmp_path / "x", "--url", sshd.url("/~/in"), "--ssh-key",
        sshd.keys.ed25519, "--host-key", sshd.host_key_fingerprint, *loose_files,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 8
    for name in FILES:
        assert (inbox / name).read_bytes() == (tmp_path / "x" / name).read_bytes()
    # One SSH login for the four files.
    assert sshd.log().count("Accepted publickey") == 1, sshd.log()


def test_push_to_https_with_the_https_options(tmp_path, loose_files, start_server, tls_ca):
    from servers.blackboard import BlackboardServer

    server = start_server(BlackboardServer(tls_ca.server))
    result = run_cli(
        "push", "--url", f"{server.endpoint}/{{type}}/store", "--user", server.user,
        "--password-env", "P", "--ca-file", tls_ca.ca_file, "--header", "X-Integration: sis-1",
        "--method", "POST", *loose_files, env={"P": server.password},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert sorted(upload.body for upload in server.uploads) == sorted(
        path.read_bytes() for path in loose_files
    )
    assert {upload.headers["X-Integration"] for upload in server.uploads} == {"sis-1"}
    assert server.password not in result.output


def test_push_writes_the_completion_signals_asked_for(tmp_path, loose_files, sshd):
    inbox = sshd.user_folder("in")
    result = run_cli(
        "push", "--to", tmp_path / "x", "--url", sshd.url("/~/in"), "--ssh-key",
        sshd.keys.ed25519, "--host-key", sshd.host_key_fingerprint, "--temp-prefix", ".",
        "--temp-suffix", ".part", "--trigger", "file", "--trigger-name", "{name}.ok",
        "--trigger-content", "--manifest", "csv", "--manifest-name", "{export}.list",
        *loose_files,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    export = loose_files[0].parent.name
    for folder in (tmp_path / "x", inbox):
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted([*FILES, *(f"{n}.ok" for n in FILES), f"{export}.list"])
        for name in FILES:
            trigger = (folder / f"{name}.ok").read_text()
            assert f"sha256={sha(folder / name)}" in trigger
        listed = list(csv.DictReader(io.StringIO((folder / f"{export}.list").read_text())))
        assert sorted(row["name"] for row in listed) == FILES
        assert {row["sha256"] for row in listed} == {sha(folder / name) for name in FILES}


def test_push_to_https_prints_the_reference_and_names_the_form_field(
    tmp_path, loose_files, start_server, tls_ca
):
    from servers.blackboard import BlackboardServer

    server = start_server(BlackboardServer(tls_ca.server))
    result = run_cli(
        "push", "--json", "--url", f"{server.endpoint}/person/store", "--user", server.user,
        "--password-env", "P", "--ca-file", tls_ca.ca_file, "--body", "multipart",
        "--multipart-field", "feed", "--reference", "reference code (?P<ref>[0-9a-f]{32})",
        loose_files[0], env={"P": server.password},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["reference"] in server.data_sets
    (upload,) = server.uploads
    assert b'name="feed"' in upload.body and loose_files[0].read_bytes() in upload.body


# --- push --status-url: waiting for the receiving system --------------------------------


@pytest.fixture
def learn(start_server, tls_ca):
    from servers.blackboard import BlackboardServer

    return start_server(BlackboardServer(tls_ca.server))


def push_tracked(learn, tls_ca, *paths, extra=(), cwd=None):
    return run_cli(
        "push", "--json", "--url", f"{learn.endpoint}/person/store", "--user", learn.user,
        "--password-env", "P", "--ca-file", tls_ca.ca_file,
        "--reference", "reference code (?P<ref>[0-9a-f]{32})",
        "--status-url", f"{learn.endpoint}/dataSetStatus/{{reference}}",
        "--status-done", "queuedCount == 0", "--status-fail", "errorCount > 0",
        "--status-warn", "warningCount > 0", "--status-interval", "0.1s", *extra, *paths,
        env={"P": learn.password},
    )  # fmt: skip


def test_push_with_a_status_url_prints_each_file_once_processed(learn, tls_ca, loose_files):
    learn.queued = 3
    result = push_tracked(learn, tls_ca, *loose_files[:2])
    assert result.code == 0, result.stderr
    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert len(lines) == 2 and {line["processing"] for line in lines} == {"done"}
    for line in lines:
        data_set = learn.data_sets[line["reference"]]
        assert data_set.polls >= 3  # queued 3, 2, 1, then 0
        assert line["status"]["queuedCount"] == "0"  # as the XML answer has it
    assert len(learn.uploads) == 2


def test_push_reports_processing_failures_and_timeouts_in_one_line_each(learn, tls_ca, loose_files):
    learn.errors = 2
    failed = push_tracked(learn, tls_ca, loose_files[0])
    assert failed.code == 1 and failed.stdout == ""
    (line,) = [text for text in failed.stderr.splitlines() if text.startswith("ERROR")]
    assert "processing failed (errorCount > 0)" in line and "errors 2" in line
    learn.errors = 0
    learn.never_complete = True
    late = push_tracked(learn, tls_ca, loose_files[1], extra=["--status-timeout", "0.5s"])
    assert late.code == 1 and late.stdout == ""
    assert "still not processed after status_timeout" in late.stderr
    assert learn.password not in failed.output + late.output


def test_push_records_the_processing_of_files_inside_a_monitor(
    tmp_path, gem_fixtures, learn, tls_ca
):
    learn.warnings = 1
    config = monitor_config(tmp_path, gem_fixtures, [{"url": str(tmp_path / "out")}])
    fetched = run_cli("-c", config, "fetch")
    unzipped = run_cli("-c", config, "unzip", input=fetched.stdout)
    paths = unzipped.stdout.split()
    result = push_tracked(learn, tls_ca, *paths)
    assert result.code == 0, result.stderr
    assert {json.loads(text)["processing"] for text in result.stdout.splitlines()} == {"warned"}
    assert result.stderr.count("processed with warnings (warningCount > 0)") == len(paths)
    with ledger_of(tmp_path) as ledger:
        statuses = [d.status for d in ledger.deliveries() if d.destination.startswith("https")]
    assert statuses == ["warned"] * len(paths)


def test_ctrl_c_stops_the_waiting_and_the_file_stays_delivered(learn, tls_ca, loose_files):
    learn.never_complete = True
    command = [
        sys.executable, "-m", "exportmon", "push", "--url", f"{learn.endpoint}/person/store",
        "--user", learn.user, "--password-env", "P", "--ca-file", str(tls_ca.ca_file),
        "--reference", "reference code (?P<ref>[0-9a-f]{32})",
        "--status-url", f"{learn.endpoint}/dataSetStatus/{{reference}}",
        "--status-done", "queuedCount == 0", "--status-interval", "0.2s", str(loose_files[0]),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "P": learn.password},
    )
    wait_for(lambda: any(d.polls for d in learn.data_sets.values()), timeout=30)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert out == b"" and b"Traceback" not in err
    assert len(learn.uploads) == 1
