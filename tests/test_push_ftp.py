"""FTP and FTPS delivery against the real pyftpdlib servers: exact content, folders made one
level at a time, atomic renames seen from a concurrent listing, retries after dropped
connections, certificate checks, permissions, and the standalone `exportmon push-ftp`."""

from __future__ import annotations

import ftplib
import hashlib
import json
import os
import ssl
import threading
import time
import zipfile
from pathlib import Path

import pytest
from gem_output import NAMES as NAMES_BY_KIND
from gem_output import REWRITTEN, UNCHANGED

from cli import run_cli
from exportmon.actions.deliver import deliver_items
from exportmon.deliver import IN_PROGRESS, Outgoing
from exportmon.deliver.ftp import FtpAddress, FtpDestination, normalize_dir
from exportmon.errors import AuthError, ConnectionFailed, DeliveryError, TLSError, UsageError
from servers.ftp import FtpServer

NAMES = [
    "5-20130923-072312-calendars.csv",
    "5-20130923-072312-organizations.csv",
    "5-20130923-072312-organizations_contact_details.csv",
    "5-20130923-072312-sites.csv",
]


@pytest.fixture(params=["ftp", "ftps"])
def server(request) -> FtpServer:
    """The plain FTP server, then the FTPS one (TLS required on control and data)."""
    return request.getfixturevalue(f"{request.param}_server")


def url(server: FtpServer) -> str:
    return f"{'ftps' if server.tls else 'ftp'}://127.0.0.1:{server.port}"


def destination(server: FtpServer, directory: str = "in/exports", **options) -> FtpDestination:
    options.setdefault("backoff", 0.05)
    return FtpDestination(
        url(server),
        directory,
        user=server.user,
        password=server.password,
        ca_file=server.ca_file,
        **options,
    )


@pytest.fixture
def gem_files(tmp_path, gem_fixtures) -> list[Path]:
    folder = tmp_path / "export"
    with zipfile.ZipFile(gem_fixtures / "20130923-072313-export.zip") as archive:
        archive.extractall(folder)
    return [folder / name for name in NAMES]


def remote_files(server: FtpServer) -> dict[str, bytes]:
    return {
        str(p.relative_to(server.home)): p.read_bytes()
        for p in sorted(server.home.rglob("*"))
        if p.is_file()
    }


# --- the destination --------------------------------------------------------------------


def test_files_arrive_complete_in_folders_made_one_level_at_a_time(server, gem_files):
    (server.home / "in").mkdir()  # an existing level is fine
    items = [
        (Outgoing.from_path(p, f"{p.stem.rsplit('-', 1)[1]}/{p.name}"), None) for p in gem_files
    ]
    delivered, failures = deliver_items(destination(server), items)
    assert failures == []
    assert [d.placed.location for d in delivered] == [
        f"{url(server)}/in/exports/{item.name}" for item, _ in items
    ]
    files = remote_files(server)
    for path in gem_files:
        kind = path.stem.rsplit("-", 1)[1]
        assert files[f"in/exports/{kind}/{path.name}"] == path.read_bytes()
    assert not [name for name in files if name.endswith(IN_PROGRESS)]
    made = [c.path for c in server.commands_named("MKD") if c.code == 257]
    assert made == [
        "/in/exports",
        "/in/exports/calendars",
        "/in/exports/organizations",
        "/in/exports/organizations_contact_details",
        "/in/exports/sites",
    ]
    # Uploaded under the temporary name, then renamed.
    stored = [c.path for c in server.commands_named("STOR")]
    assert stored == [f"/in/exports/{item.name}{IN_PROGRESS}" for item, _ in items]
    renamed = [c.path for c in server.commands_named("RNTO")]
    assert renamed == [f"/in/exports/{item.name}" for item, _ in items]


def test_several_files_share_one_login(server, gem_files):
    items = [(Outgoing.from_path(p, p.name), None) for p in gem_files]
    deliver_items(destination(server, "."), items)
    logins = server.commands_named("USER")
    # ftputil: one control connection for commands, one reused for the transfers.
    assert len(logins) == 2
    assert sorted(remote_files(server)) == sorted(NAMES)


def test_a_connection_dropped_mid_upload_is_retried_cleanly(server, tmp_path, caplog):
    source = tmp_path / "big.csv"
    source.write_bytes(os.urandom(1_500_000))
    server.drop_next_uploads(1, after_bytes=200_000)
    with destination(server) as target:
        placed = target.put(Outgoing.from_path(source, "big.csv"), "big.csv")
    assert placed.bytes == 1_500_000
    assert remote_files(server) == {"in/exports/big.csv": source.read_bytes()}
    assert len(server.incomplete) == 1 and len(server.received) == 1
    assert [c.code for c in server.commands_named("STOR")] == [426, 226]
    assert "retrying" in caplog.text


def test_a_cut_that_the_client_cannot_see_is_caught_by_the_size_check(server, tmp_path):
    source = tmp_path / "small.csv"
    source.write_bytes(b"a,b\n" * 5000)
    # The server keeps 1000 bytes and resets the data connection after the client sent
    # everything: the client may see no error at all, the size check does.
    server.drop_next_uploads(1, after_bytes=1000, close_control=True)
    with destination(server) as target:
        target.put(Outgoing.from_path(source, "small.csv"), "small.csv")
    assert remote_files(server) == {"in/exports/small.csv": source.read_bytes()}
    assert len(server.commands_named("STOR")) == 2


def test_retries_run_out_with_a_clear_error(server, tmp_path):
    source = tmp_path / "x.csv"
    source.write_bytes(b"x" * 300_000)
    server.drop_next_uploads(3, after_bytes=10_000)
    with pytest.raises(ConnectionFailed, match="after 3 attempts") as raised:
        destination(server, retries=2).put(Outgoing.from_path(source, "x.csv"), "x.csv")
    assert "\n" not in raised.value.one_line()
    assert raised.value.retryable


def test_failed_deliveries_leave_no_in_progress_file(server, tmp_path):
    source = tmp_path / "x.csv"
    source.write_bytes(b"x" * 300_000)
    server.drop_next_uploads(3, after_bytes=10_000)
    delivered, failures = deliver_items(
        destination(server, retries=2), [(Outgoing.from_path(source, "x.csv"), None)]
    )
    assert delivered == [] and isinstance(failures[0], ConnectionFailed)
    assert not any(name.endswith(IN_PROGRESS) for name in remote_files(server))


def test_a_concurrent_listing_never_shows_the_final_name_early(server, tmp_path):
    source = tmp_path / "slow.csv"
    source.write_bytes(os.urandom(300_000))
    final = server.home / "in" / "exports" / "slow.csv"
    server.slow_uploads(300_000)
    listings: list[set[str]] = []
    early: list[int] = []  # sizes of the file whenever it was listed under its final name
    problems: list[BaseException] = []
    finished = threading.Event()

    def list_remote() -> None:
        try:
            client = server.client()
            while not finished.is_set():
                try:
                    names = {name.rsplit("/", 1)[-1] for name in client.nlst("in/exports")}
                except ftplib.error_perm:  # the folder does not exist yet
                    names = set()
                except (ssl.SSLError, EOFError, ConnectionError):
                    # The observer's own FTPS data connection can fail under load
                    # (SHUTDOWN_WHILE_IN_INIT); that says nothing about the upload.
                    client.close()
                    client = server.client()
                    continue
                if "slow.csv" in names and final.stat().st_size != 300_000:
                    early.append(final.stat().st_size)
                listings.append(names)
                time.sleep(0.01)
            client.quit()
        except BaseException as exc:  # reported by the test, not lost in the thread
            problems.append(exc)

    lister = threading.Thread(target=list_remote)
    lister.start()
    try:
        while not listings and not problems:
            time.sleep(0.01)
        with destination(server) as target:
            target.put(Outgoing.from_path(source, "slow.csv"), "slow.csv")
        uploaded = len(listings)
        deadline = time.monotonic() + 10
        while len(listings) < uploaded + 2 and not problems and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        finished.set()
        lister.join()
    assert problems == []
    assert early == [], "the final name was listed before the file was complete"
    assert any("slow.csv" + IN_PROGRESS in names for names in listings), "upload not caught"
    assert "slow.csv" in listings[-1]
    assert final.read_bytes() == source.read_bytes()


def test_overwrite_policies_on_the_server(server, tmp_path):
    source = tmp_path / "5-1-sites.csv"
    source.write_text("new")
    (server.home / "in" / "exports").mkdir(parents=True)
    (server.home / "in" / "exports" / "5-1-sites.csv").write_text("old")
    item = [(Outgoing.from_path(source, "5-1-sites.csv"), None)]

    (kept,), _ = deliver_items(destination(server, overwrite="keep"), item)
    assert kept.placed.kept and (server.home / "in/exports/5-1-sites.csv").read_text() == "old"

    (stamped,), _ = deliver_items(destination(server, overwrite="timestamp"), item)
    assert stamped.placed.target.startswith("5-1-sites.") and stamped.placed.target.endswith(
        "Z.csv"
    )
    assert (server.home / "in/exports" / stamped.placed.target).read_text() == "new"
    assert (server.home / "in/exports/5-1-sites.csv").read_text() == "old"

    deliver_items(destination(server, overwrite="replace"), item)
    assert (server.home / "in/exports/5-1-sites.csv").read_text() == "new"


def test_a_link_planted_at_the_temporary_name_is_not_written_through(server, tmp_path):
    source = tmp_path / "5-1-sites.csv"
    source.write_text("new")
    folder = server.home / "in" / "exports"
    folder.mkdir(parents=True)
    theirs = server.home / "theirs.csv"
    theirs.write_text("theirs")
    (folder / f"5-1-sites.csv{IN_PROGRESS}").symlink_to(theirs)
    copy = server.home / "copy.csv"
    copy.write_text("new")
    (folder / "other.csv").symlink_to("../../copy.csv")  # relative: the client can follow it
    with destination(server) as ftp:
        # A link at the final name is no delivered file, even to the same bytes.
        digest = hashlib.sha256(b"new").hexdigest()
        assert not ftp.holds("other.csv", 3, digest)
    deliver_items(destination(server), [(Outgoing.from_path(source, "5-1-sites.csv"), None)])
    assert theirs.read_text() == "theirs"
    assert (folder / "5-1-sites.csv").read_text() == "new"
    assert sorted(p.name for p in folder.iterdir()) == ["5-1-sites.csv", "other.csv"]


def test_an_untrusted_certificate_is_refused_before_login(tmp_path, tls_ca, start_server):
    wrong = start_server(FtpServer(tmp_path / "home", cert=tls_ca.wrong_ca))
    target = FtpDestination(
        f"ftps://127.0.0.1:{wrong.port}",
        user=wrong.user,
        password=wrong.password,
        ca_file=tls_ca.ca_file,
        backoff=0.05,
    )
    source = tmp_path / "x.csv"
    source.write_text("x")
    with pytest.raises(TLSError, match="certificate not trusted") as raised:
        target.put(Outgoing.from_path(source, "x.csv"), "x.csv")
    assert "ftp_ca_file" in raised.value.one_line()
    assert wrong.commands_named("USER", "PASS", "STOR") == []
    assert len(wrong.commands_named("AUTH")) == 1, "a certificate problem is not retried"


def test_a_read_only_folder_is_refused_without_retries(server, tmp_path):
    source = tmp_path / "x.csv"
    source.write_text("x")
    target = destination(server, "readonly/in")
    with pytest.raises(DeliveryError, match="refused: 550"):
        target.put(Outgoing.from_path(source, "x.csv"), "x.csv")
    assert len(server.commands_named("MKD")) == 1
    assert not (server.home / "readonly" / "in").exists()


def test_a_wrong_password_is_an_auth_error(server, tmp_path):
    source = tmp_path / "x.csv"
    source.write_text("x")
    target = FtpDestination(
        url(server), user=server.user, password="wrong", ca_file=server.ca_file, backoff=0.05
    )
    with pytest.raises(AuthError, match="login refused"):
        target.put(Outgoing.from_path(source, "x.csv"), "x.csv")
    assert len(server.commands_named("PASS")) == 1


def test_a_server_that_is_down_fails_after_the_retries(ftp_server, tmp_path):
    source = tmp_path / "x.csv"
    source.write_text("x")
    ftp_server.stop()
    target = destination(ftp_server, retries=1)
    with pytest.raises(ConnectionFailed, match="after 2 attempts"):
        target.put(Outgoing.from_path(source, "x.csv"), "x.csv")


def test_addresses_and_folders():
    assert FtpAddress.parse("ftps://ftp.example.com").url == "ftps://ftp.example.com:21"
    assert FtpAddress.parse("ftp://[::1]:2121/").url == "ftp://[::1]:2121"
    for bad in ("http://x", "ftp://user:pw@host", "ftp://host/dir", "ftp://host:99999"):
        with pytest.raises(UsageError):
            FtpAddress.parse(bad)
    assert normalize_dir("./in\\exports/") == "in/exports"
    assert normalize_dir("/abs//dir") == "/abs/dir"
    assert normalize_dir(".") == ""
    with pytest.raises(UsageError):
        normalize_dir("in/../..")
    assert FtpDestination("ftp://h", ".").label == "ftp://h:21/"
    assert FtpDestination("ftps://h:990", "in/x").label == "ftps://h:990/in/x"


# --- the command ------------------------------------------------------------------------


def test_push_ftp_standalone_with_flags_and_no_config(ftps_server, gem_files, tls_ca):
    env = {"FTP_PASS": ftps_server.password}
    result = run_cli(
        "push-ftp",
        "--url",
        url(ftps_server),
        "--dir",
        "in/exports",
        "--user",
        ftps_server.user,
        "--password-env",
        "FTP_PASS",
        "--ca-file",
        tls_ca.ca_file,
        "--sub-dirs",
        *gem_files,
        env=env,
    )
    assert result.code == 0, result.stderr
    expected = [
        f"{url(ftps_server)}/in/exports/{p.stem.rsplit('-', 1)[1]}/{p.name}" for p in gem_files
    ]
    assert result.stdout.splitlines() == expected
    assert ftps_server.password not in result.output
    common = gem_files[0].parent
    assert f"Copied 4 file(s) from '{common}' to '{url(ftps_server)}/in/exports'" in result.stderr
    for path in gem_files:
        kind = path.stem.rsplit("-", 1)[1]
        assert (ftps_server.home / "in/exports" / kind / path.name).read_bytes() == (
            path.read_bytes()
        )


def test_push_ftp_json_password_command_and_local_to(ftp_server, gem_files, tmp_path):
    result = run_cli(
        "push-ftp",
        "--json",
        "--url",
        url(ftp_server),
        "--user",
        ftp_server.user,
        "--password-command",
        f"printf %s {ftp_server.password}",
        "--to",
        tmp_path / "local",
        "--order",
        "sites",
        input="".join(f"{p}\n" for p in gem_files),
    )
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 8
    local = [r for r in records if r["destination"].startswith("local:")]
    remote = [r for r in records if r["destination"].startswith("ftp:")]
    assert local[0]["name"] == NAMES[3]  # sites first
    assert remote[0]["name"] == NAMES[3]
    assert all(r["path"].startswith(url(ftp_server) + "/") for r in remote)
    assert sorted(os.listdir(tmp_path / "local")) == sorted(NAMES)
    assert sorted(remote_files(ftp_server)) == sorted(NAMES)
    assert ftp_server.password not in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dir", "in"], "--dir needs --url"),
        (["--url", "ftp://h", "--user", "u"], "no password for FTP user u"),
        (["--url", "http://h"], "not an ftp:// or ftps://"),
        (["--url", "ftp://h", "--password-env", "A", "--password-command", "b"], "one way"),
        (["--url", "ftp://h", "--user", "u", "--password-env", "UNSET_VAR"], "UNSET_VAR"),
        (["--password", "secret"], "No such option"),
        ([], "no destination"),
    ],
)
def test_push_ftp_usage_errors(tmp_path, args, words):
    source = tmp_path / "x.csv"
    source.write_text("x")
    result = run_cli("push-ftp", *args, source)
    assert result.code == 2, result.output
    assert words in result.stderr


def test_push_ftp_one_missing_file_does_not_stop_the_others(ftp_server, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("1\n")
    result = run_cli(
        "push-ftp",
        "--url",
        url(ftp_server),
        "--user",
        ftp_server.user,
        "--password-env",
        "P",
        tmp_path / "missing.csv",
        good,
        env={"P": ftp_server.password},
    )
    assert result.code == 1
    assert result.stdout.splitlines() == [f"{url(ftp_server)}/good.csv"]
    assert "missing.csv" in result.stderr


# --- deliver_export over FTP(S), as run uses it -----------------------------------------


@pytest.mark.parametrize("sub_dirs", [False, True])
@pytest.mark.parametrize("rewrite", [False, True])
def test_deliver_export_to_the_ftp_server_of_the_config(
    server, tmp_path, gem_fixtures, monkeypatch, caplog, rewrite, sub_dirs
):
    import logging
    import shutil

    from exportmon.actions.deliver import deliver_export
    from exportmon.actions.unzip import unpack_export
    from exportmon.config.schema import CsvConfig, DeliverConfig, MonitorConfig
    from exportmon.ledger import Ledger

    root = tmp_path / "state"
    (root / "downloads").mkdir(parents=True)
    download = root / "downloads" / "20130923-072313-export.zip"
    shutil.copyfile(gem_fixtures / download.name, download)
    monkeypatch.setenv("FTP_TEST_PASSWORD", server.password)
    monitor = MonitorConfig(
        name="ftp",
        ids=[2],
        root=str(root),
        sub_dirs=sub_dirs,
        csv=CsvConfig(row_sep="##\n", col_sep="|", quote_char=":", quoting="gem",
                      replace_newlines="<newline>") if rewrite else None,
        deliver=DeliverConfig(
            ftp_url=url(server),
            ftp_dir="in/exports",
            ftp_user=server.user,
            ftp_password_env="FTP_TEST_PASSWORD",
            ftp_ca_file=str(server.ca_file) if server.ca_file else None,
            order=["organizations", "sites"],
        ),
    )  # fmt: skip
    server.drop_next_uploads(1, after_bytes=500)
    with Ledger.open(root / "ledger.sqlite") as ledger:
        mail = ledger.add_mail(source="t", uid="1")
        export = ledger.add_export(key="k", kind="link", mail_id=mail.id, export_id=2)
        export = ledger.advance_export(export.id, "downloaded", download_path=str(download))
        export = unpack_export(monitor, ledger, export)
        with caplog.at_level(logging.INFO, logger="exportmon"):
            export = deliver_export(monitor, ledger, export)
        assert export.state == "delivered" and ledger.mail(mail.id).state == "delivered"
        label = f"{url(server)}/in/exports"
        assert f"Copied 4 file(s) from '{download}' to '{label}'" in caplog.messages
        deliveries = ledger.deliveries(export_row=export.id)
        assert [d.state for d in deliveries] == ["done"] * 4
        kinds = ["organizations", "sites", "calendars", "organizations_contact_details"]
        assert [d.target for d in deliveries] == [
            f"{kind}/5-20130923-072312-{kind}.csv" if sub_dirs else f"5-20130923-072312-{kind}.csv"
            for kind in kinds
        ]
        assert {d.destination for d in deliveries} == {label}
    files = remote_files(server)
    assert len(files) == 4 and not any(n.endswith(IN_PROGRESS) for n in files)
    expected = REWRITTEN if rewrite else UNCHANGED
    with zipfile.ZipFile(gem_fixtures / "20130923-072313-export.zip") as archive:
        for kind, name in NAMES_BY_KIND.items():
            content = files[f"in/exports/{kind}/{name}" if sub_dirs else f"in/exports/{name}"]
            assert expected[kind].encode() in content
            assert (content == archive.read(name)) is not rewrite
    assert [c.code for c in server.commands_named("STOR")][:2] == [426, 226]
    assert server.password not in caplog.text
