"""SFTP destinations against a real OpenSSH server (tests/servers/sshd.py): logins,
host key trust, temporary name then rename, overwrite policies, the chroot, a whole
``run --once``, and resuming after a kill between the upload and the rename."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, write_config
from gem_output import GEM_OPTIONS, GEM_ZIP, NAMES, REWRITTEN, UNCHANGED

from cli import run_cli
from exportmon.actions.deliver import deliver_items, deliver_one
from exportmon.config.schema import DestinationConfig
from exportmon.crashpoints import ENVIRONMENT
from exportmon.deliver import IN_PROGRESS, Outgoing
from exportmon.deliver.kinds import open_destination
from exportmon.deliver.sftp import (
    SftpDestination,
    fingerprint,
    normalize_dir,
    normalize_pin,
)
from exportmon.deliver.sftp_writes import MAX_HEADER, write_size
from exportmon.deliver.signals import TempNaming
from exportmon.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    UsageError,
)
from exportmon.ledger import Ledger
from servers.sshd import JAIL_USER, PASSPHRASE, PASSWORD, USER, SshServer

SIZE = 3 * 1024 * 1024 + 17  # several blocks and an odd end


@pytest.fixture
def known_hosts(sshd: SshServer, tmp_path: Path) -> Path:
    """A known_hosts file with the server's key, as ``ssh-keyscan -H`` writes it (hashed)."""
    path = tmp_path / "known_hosts"
    path.write_text(sshd.keyscan(hashed=True))
    return path


@pytest.fixture
def payload(tmp_path: Path) -> Outgoing:
    source = tmp_path / "payload.csv"
    source.write_bytes(os.urandom(SIZE))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return Outgoing.from_path(source, "people.csv", digest)


def destination(sshd: SshServer, known_hosts: Path | None, path: str = "/~/in", **options):
    options.setdefault("user", USER)
    options.setdefault("key_file", sshd.keys.ed25519)
    options.setdefault("backoff", 0.05)
    return SftpDestination(sshd.host, sshd.port, path, known_hosts=known_hosts, **options)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def logins(sshd: SshServer) -> int:
    return sshd.log().count("Accepted publickey for ") + sshd.log().count("Accepted password for ")


# --- logging in -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ed25519", "ecdsa", "rsa_pem"])
def test_key_login_delivers_the_exact_bytes_under_the_final_name(sshd, known_hosts, payload, key):
    with destination(sshd, known_hosts, key_file=getattr(sshd.keys, key)) as sftp:
        placed = sftp.put(payload, "people.csv")
    assert placed.location == f"sftp://127.0.0.1:{sshd.port}/~/in/people.csv"
    assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()
    assert leftovers(sshd.home) == ["in/people.csv"]


def test_password_login(sshd, known_hosts, payload):
    with destination(sshd, known_hosts, key_file=None, password=PASSWORD) as sftp:
        sftp.put(payload, "people.csv")
    assert (sshd.home / "in" / "people.csv").stat().st_size == SIZE
    assert f"Accepted password for {USER}" in sshd.log()


def test_a_protected_key_is_opened_with_the_passphrase_from_the_environment(
    sshd, known_hosts, payload, monkeypatch
):
    monkeypatch.setenv("KEY_PASS", PASSPHRASE)
    config = DestinationConfig(
        url=sshd.url("/~/in"),
        ssh_key=str(sshd.keys.ed25519_protected),
        ssh_key_passphrase_env="KEY_PASS",
        known_hosts=str(known_hosts),
    )
    with open_destination(config) as sftp:
        sftp.put(payload, "people.csv")
    assert (sshd.home / "in" / "people.csv").stat().st_size == SIZE


def test_a_protected_key_without_or_with_a_wrong_passphrase_is_one_line(sshd, known_hosts):
    for passphrase, expected in ((None, "protected by a passphrase"), ("nope", "wrong passphrase")):
        sftp = destination(
            sshd, known_hosts, key_file=sshd.keys.ed25519_protected, passphrase=passphrase
        )
        with pytest.raises(AuthError, match=expected) as caught, sftp:
            sftp.exists("x")
        assert "\n" not in caught.value.one_line() and "nope" not in caught.value.one_line()
    assert logins(sshd) == 0


def test_a_wrong_password_is_refused_at_once_in_one_line(sshd, known_hosts):
    sftp = destination(sshd, known_hosts, key_file=None, password="wrong", retries=3, backoff=30)
    started = time.monotonic()
    with pytest.raises(AuthError) as caught, sftp:
        sftp.exists("x")
    assert time.monotonic() - started < 20  # no back-off wait: not retried
    line = caught.value.one_line()
    assert f"login refused for user {USER}" in line and "wrong" not in line
    assert sshd.log().count(f"Failed password for {USER}") == 1


def test_an_untrusted_key_is_refused(sshd, known_hosts):
    with (
        pytest.raises(AuthError, match="not accepted"),
        destination(sshd, known_hosts, key_file=sshd.keys.untrusted) as sftp,
    ):
        sftp.exists("x")


def test_no_agent_and_no_key_of_the_account_is_used(sshd, known_hosts, monkeypatch, tmp_path):
    # A trusted key in ~/.ssh and an agent socket must not be picked up on their own.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(sshd.keys.ed25519.read_bytes())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    with (
        pytest.raises(UsageError, match="no way to log in"),
        destination(sshd, known_hosts, key_file=None) as sftp,
    ):
        sftp.exists("x")


# --- host keys --------------------------------------------------------------------------


def test_plain_known_hosts_entries_are_accepted_too(sshd, tmp_path, payload):
    plain = tmp_path / "plain_known_hosts"
    plain.write_text("# comment\n" + sshd.keyscan())
    assert f"[127.0.0.1]:{sshd.port} " in plain.read_text()
    with destination(sshd, plain) as sftp:
        assert not sftp.exists("people.csv")


def test_known_hosts_is_read_as_ssh_reads_it(sshd, tmp_path, payload):
    """Wildcards, negations and a @cert-authority line (for which paramiko's own
    reader refuses the whole file) are fine."""
    kind, key = Path(f"{sshd.host_key}.pub").read_text().split()[:2]
    ca_kind, ca_key = Path(f"{sshd.keys.untrusted}.pub").read_text().split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(
        f"@cert-authority *.example.com {ca_kind} {ca_key}\n"
        f"[127.0.0.?]:{sshd.port},!bad.example.com {kind} {key}\n"
    )
    with destination(sshd, path) as sftp:
        sftp.put(payload, "people.csv")
    assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()


def test_a_revoked_host_key_is_refused(sshd, known_hosts, tmp_path):
    kind, key = Path(f"{sshd.host_key}.pub").read_text().split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts.read_text() + f"@revoked * {kind} {key}\n")
    with pytest.raises(ConnectionFailed) as caught, destination(sshd, path) as sftp:
        sftp.exists("x")
    line = caught.value.one_line()
    assert "is marked @revoked" in line and sshd.host_key_fingerprint in line
    assert logins(sshd) == 0


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_trust_it(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    sftp = destination(sshd, empty, retries=3, backoff=30)
    with pytest.raises(ConnectionFailed) as caught, sftp:
        sftp.exists("x")
    line = caught.value.one_line()
    assert "unknown host key" in line and sshd.host_key_fingerprint in line
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in line
    assert f'host_key = "{sshd.host_key_fingerprint}"' in line
    assert empty.read_text() == ""  # never added
    assert logins(sshd) == 0


def test_a_missing_known_hosts_file_says_so(sshd, tmp_path):
    with (
        pytest.raises(ConnectionFailed, match="no such file"),
        destination(sshd, tmp_path / "absent") as sftp,
    ):
        sftp.exists("x")


def test_a_changed_host_key_is_refused(sshd, tmp_path):
    changed = tmp_path / "known_hosts"
    changed.write_text(sshd.known_hosts_line(sshd.keys.untrusted))  # another ed25519 key
    with pytest.raises(ConnectionFailed) as caught, destination(sshd, changed) as sftp:
        sftp.exists("x")
    line = caught.value.one_line()
    assert "host key has changed" in line and sshd.host_key_fingerprint in line
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in line
    assert logins(sshd) == 0


def test_a_pinned_host_key_is_accepted_without_known_hosts(sshd, payload):
    with destination(sshd, None, host_key=sshd.host_key_fingerprint) as sftp:
        sftp.put(payload, "people.csv")
    assert (sshd.home / "in" / "people.csv").exists()


def test_a_wrong_pin_is_refused_even_when_known_hosts_knows_the_key(sshd, known_hosts, tmp_path):
    (tmp_path / "other.pub").write_text(sshd.known_hosts_line(sshd.keys.untrusted))
    other = fingerprint_of(sshd.keys.untrusted)
    with (
        pytest.raises(ConnectionFailed) as caught,
        destination(sshd, known_hosts, host_key=other) as sftp,
    ):
        sftp.exists("x")
    line = caught.value.one_line()
    assert f"not the pinned host_key {other}" in line and sshd.host_key_fingerprint in line


def fingerprint_of(key_file: Path) -> str:
    from servers.sshd import fingerprint as keygen_fingerprint

    return keygen_fingerprint(Path(f"{key_file}.pub"))


def test_the_fingerprint_is_the_one_ssh_keygen_prints(sshd):
    import paramiko

    key = paramiko.PKey.from_path(sshd.host_key)
    assert fingerprint(key) == sshd.host_key_fingerprint


def test_a_host_key_that_is_no_fingerprint_is_a_usage_error(sshd, known_hosts):
    with pytest.raises(UsageError, match="SHA-256 fingerprint"):
        destination(sshd, known_hosts, host_key="MD5:12:34")


# --- temporary name, rename, overwrite ------------------------------------------------


def test_the_file_is_never_seen_partial_under_its_final_name(sshd, known_hosts, payload):
    folder = sshd.home / "in"
    seen = []

    def progress(description, total):
        def advance(amount):
            final = folder / "people.csv"
            seen.append((final.exists(), (folder / f"people.csv{IN_PROGRESS}").exists(), amount))

        return advance, lambda: None

    with destination(sshd, known_hosts) as sftp:
        sftp.put(payload, "people.csv", progress=progress)
    assert len(seen) >= 3
    assert all(not final and temporary for final, temporary, _ in seen)
    assert sum(amount for *_, amount in seen) == SIZE
    assert leftovers(sshd.home) == ["in/people.csv"]


def test_a_link_planted_at_the_temporary_or_final_name_is_never_written_through(
    sshd, known_hosts, payload
):
    folder = sshd.user_folder("in")
    user = pwd.getpwnam(USER)
    target = sshd.home / "theirs.csv"
    target.write_bytes(payload.source.read_bytes())  # same size and bytes as the upload
    os.chown(target, user.pw_uid, user.pw_gid)
    os.symlink(target, folder / f"people.csv{IN_PROGRESS}")
    os.symlink(target, folder / "people.csv")
    with destination(sshd, known_hosts) as sftp:
        # A link is not a delivered file, whatever it points to.
        assert not sftp.holds("people.csv", payload.bytes, payload.sha256)
        sftp.put(dataclasses.replace(payload, source=_other_bytes(payload)), "people.csv")
    assert target.read_bytes() == payload.source.read_bytes()  # untouched
    final = folder / "people.csv"
    assert not final.is_symlink() and final.read_bytes() != target.read_bytes()
    assert leftovers(sshd.home) == ["in/people.csv", "theirs.csv"]


def _other_bytes(payload: Outgoing) -> Path:
    other = payload.source.with_name("other.csv")
    other.write_bytes(os.urandom(payload.bytes))
    return other


def test_an_existing_file_is_replaced_with_posix_rename(sshd, known_hosts, payload):
    sshd.user_folder("in")
    old = sshd.home / "in" / "people.csv"
    old.write_bytes(b"yesterday\n")
    with destination(sshd, known_hosts) as sftp:
        sftp.put(payload, "people.csv")
        assert sftp._posix_rename  # OpenSSH offers the extension, and it was used
    assert old.read_bytes() == payload.source.read_bytes()


def test_without_posix_rename_the_old_file_is_removed_then_renamed(
    ssh_keys, start_server, tmp_path, payload
):
    sshd = start_server(SshServer(ssh_keys, denied=("posix-rename",)))
    known = tmp_path / "known_hosts"
    known.write_text(sshd.keyscan())
    sshd.user_folder("in")
    (sshd.home / "in" / "people.csv").write_bytes(b"yesterday\n")
    try:
        with destination(sshd, known) as sftp:
            sftp.put(payload, "people.csv")
            assert not sftp._posix_rename
            sftp.put(dataclasses.replace(payload, name="other.csv"), "other.csv")
        assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()
        assert leftovers(sshd.home) == ["in/other.csv", "in/people.csv"]
    finally:
        sshd.remove()


# --- the upload stream (exportmon/deliver/sftp_writes.py) ---------------------------------


def test_requests_carry_what_the_server_allows(sshd, known_hosts, payload):
    with destination(sshd, known_hosts) as sftp:
        sftp.put(payload, "people.csv")
        client = sftp._sftp
        # OpenSSH says 255 KiB in its limits@openssh.com answer, asked once.
        assert sftp._request_size == write_size(client, client.extensions) == 261120
    assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()


def test_without_the_limits_extension_each_request_fits_one_channel_packet(
    ssh_keys, start_server, tmp_path, payload
):
    sshd = start_server(SshServer(ssh_keys, denied=("limits",)))
    known = tmp_path / "known_hosts"
    known.write_text(sshd.keyscan())
    try:
        with destination(sshd, known) as sftp:
            sftp.put(payload, "people.csv")
            packet = sftp._sftp.get_channel().out_max_packet_size
            assert sftp._request_size > 30000
            assert sftp._request_size + MAX_HEADER <= packet - 64
        assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()
    finally:
        sshd.remove()


def test_a_full_disk_is_one_line_and_stops_the_upload_early(sshd, known_hosts, payload):
    folder = sshd.user_folder("in")
    user = pwd.getpwnam(USER)
    mounted = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size=1m,uid={user.pw_uid},gid={user.pw_gid},mode=0755",
            "tmpfs",
            str(folder),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"this test mounts a 1 MB tmpfs, as root: {mounted.stderr}"
    try:
        with destination(sshd, known_hosts, retries=0) as sftp:
            started = time.monotonic()
            with pytest.raises(DeliveryError) as caught:
                sftp.put(payload, "people.csv")  # 3 MB
            line = caught.value.one_line()
            assert "\n" not in line and "a full disk or a quota is the usual cause" in line
            assert time.monotonic() - started < 10
            sftp.discard("people.csv")
            assert leftovers(folder) == []
            small = tmp_path_file(payload.source.parent / "small.csv", b"a,b\n1,2\n")
            sftp.put(Outgoing.from_path(small, "small.csv"), "small.csv")  # room for this
        assert (folder / "small.csv").read_bytes() == b"a,b\n1,2\n"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def tmp_path_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_overwrite_keep_and_timestamp(sshd, known_hosts, payload):
    sshd.user_folder("in")
    (sshd.home / "in" / "people.csv").write_bytes(b"theirs\n")
    with destination(sshd, known_hosts, overwrite="keep") as sftp:
        kept = deliver_one(sftp, payload)
    assert kept.placed.kept and (sshd.home / "in" / "people.csv").read_bytes() == b"theirs\n"
    with destination(sshd, known_hosts, overwrite="timestamp") as sftp:
        first = deliver_one(sftp, payload)
        second = deliver_one(sftp, payload)
    assert first.placed.target != second.placed.target
    assert first.placed.target.startswith("people.") and first.placed.target.endswith(".csv")
    names = leftovers(sshd.home)
    assert len(names) == 3 and "in/people.csv" in names
    assert (sshd.home / "in" / "people.csv").read_bytes() == b"theirs\n"


def test_temp_prefix_and_temp_dir(sshd, known_hosts, payload):
    with destination(sshd, known_hosts, temp=TempNaming(prefix=".", suffix="")) as sftp:
        assert sftp.temporary("people.csv") == "in/.people.csv"
        sftp.put(payload, "people.csv")
    with destination(sshd, known_hosts, temp=TempNaming(dir="/~/staging")) as sftp:
        assert sftp.temporary("org/people.csv") == "staging/org/people.csv.in_progress"
        sftp.put(payload, "org/people.csv")
    assert leftovers(sshd.home) == ["in/org/people.csv", "in/people.csv"]
    assert (sshd.home / "staging" / "org").is_dir()


def test_temporary_names():
    def temporary(target, directory="/~/in", **naming):
        sftp = SftpDestination("h", 22, directory, user="u", temp=TempNaming(**naming))
        return sftp.temporary(target)

    assert temporary("a.csv") == "in/a.csv.in_progress"
    assert temporary("a.csv", "/in", suffix="", prefix=".") == "/in/.a.csv"
    assert temporary("x/a.csv", "/in", suffix="", dir="/tmp/t") == "/tmp/t/x/a.csv"
    assert temporary("a.csv", "/in", dir="part") == "/in/part/a.csv.in_progress"
    assert temporary("a.csv", dir="/~/staging") == "staging/a.csv.in_progress"
    with pytest.raises(UsageError, match="equal to the final one"):
        SftpDestination("h", 22, "/in", user="u", temp=TempNaming(suffix="", dir="/in"))
    assert normalize_dir("/in/exports/") == "/in/exports"
    assert normalize_dir("/~/in") == "in" and normalize_dir("/~") == normalize_dir("") == ""
    with pytest.raises(UsageError):
        normalize_dir("/in/../etc")


def test_discard_removes_a_partial_temporary_file(sshd, known_hosts):
    sshd.user_folder("in")
    partial = sshd.home / "in" / f"people.csv{IN_PROGRESS}"
    partial.write_bytes(b"half")
    with destination(sshd, known_hosts) as sftp:
        sftp.discard("people.csv")
    assert not partial.exists()


def test_holds_reads_the_bytes_back(sshd, known_hosts, payload):
    sshd.user_folder("in")
    there = sshd.home / "in" / "people.csv"
    there.write_bytes(b"x" * SIZE)  # same name, same size, other bytes
    with destination(sshd, known_hosts) as sftp:
        assert sftp.holds("people.csv", SIZE, None)
        assert not sftp.holds("people.csv", SIZE, payload.sha256)
        there.write_bytes(payload.source.read_bytes())
        assert sftp.holds("people.csv", SIZE, payload.sha256)
        assert not sftp.holds("people.csv", SIZE + 1, payload.sha256)


def test_a_complete_temporary_file_is_renamed_instead_of_uploaded_again(sshd, known_hosts, payload):
    sshd.user_folder("in")
    temporary = sshd.home / "in" / f"people.csv{IN_PROGRESS}"
    temporary.write_bytes(payload.source.read_bytes())
    with destination(sshd, known_hosts) as sftp:
        assert not sftp.holds("people.csv", SIZE, None)  # bytes unknown: not taken
        assert sftp.holds("people.csv", SIZE, payload.sha256)
    assert leftovers(sshd.home) == ["in/people.csv"]


# --- one connection, retries, the chroot -----------------------------------------------


def test_one_connection_for_a_batch(sshd, known_hosts, payload):
    items = [(dataclasses.replace(payload, name=f"f{n}.csv"), None) for n in range(4)]
    delivered, failures = deliver_items(destination(sshd, known_hosts), items)
    assert failures == [] and len(delivered) == 4
    assert logins(sshd) == 1
    assert leftovers(sshd.home) == [f"in/f{n}.csv" for n in range(4)]


def test_a_connection_lost_during_the_upload_is_retried_on_a_new_one(
    sshd, known_hosts, payload, caplog
):
    dropped = []

    def progress(description, total):
        def advance(amount):
            if not dropped:
                dropped.append(sshd.drop_sessions())

        return advance, lambda: None

    with destination(sshd, known_hosts, retries=2) as sftp:
        sftp.put(payload, "people.csv", progress=progress)
    assert dropped[0] >= 1
    assert logins(sshd) == 2
    assert "retrying in" in caplog.text
    assert (sshd.home / "in" / "people.csv").read_bytes() == payload.source.read_bytes()
    assert leftovers(sshd.home) == ["in/people.csv"]


def test_an_unreachable_server_is_retried_with_back_off_then_reported(sshd, known_hosts):
    sshd.stop()
    sftp = destination(sshd, known_hosts, retries=2, backoff=0.05)
    with pytest.raises(ConnectionFailed, match="failed after 3 attempts") as caught, sftp:
        sftp.exists("x")
    assert "\n" not in caught.value.one_line()


def test_the_chrooted_user_sees_only_its_jail(sshd, known_hosts, payload):
    with destination(sshd, known_hosts, "/upload/in", user=JAIL_USER) as sftp:
        sftp.put(payload, "people.csv")
    assert leftovers(sshd.jail) == ["upload/in/people.csv"]
    with (
        pytest.raises(DeliveryError) as caught,
        destination(sshd, known_hosts, "/in", user=JAIL_USER, retries=0) as sftp,
    ):
        sftp.put(payload, "people.csv")  # / of the jail is root's
    assert "cannot create the folder /in at" in caught.value.one_line()
    assert "Permission denied" in caught.value.one_line()


# --- configuration ----------------------------------------------------------------------


def test_the_label_has_no_user_and_the_path_as_written(sshd, known_hosts):
    config = DestinationConfig(url=sshd.url("/srv/in/"), password="x")
    assert open_destination(config).label == f"sftp://127.0.0.1:{sshd.port}/srv/in"
    assert open_destination(dataclasses.replace(config, url=sshd.url("/~/in"))).display == (
        f"sftp://127.0.0.1:{sshd.port}/~/in"
    )
    with pytest.raises(ConfigError, match="no user"):
        open_destination(DestinationConfig(url=f"sftp://127.0.0.1:{sshd.port}/in"))


def test_without_paramiko_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paramiko", None)
    with pytest.raises(ConfigError) as caught:
        open_destination(DestinationConfig(url="sftp://u@example.com/in", password="x"))
    assert "pip install 'exportmon[sftp]'" in caught.value.one_line()


# --- whole runs -------------------------------------------------------------------------


@pytest.fixture
def sftp_monitor(tmp_path, mail_user, https_server, gem_fixtures, sshd, known_hosts, tls_ca):
    """A monitor config delivering to the ``sshd`` fixture, and a mail with the gem's
    export waiting; ``entry`` changes the ``[[deliver]]`` entry (None removes a key)."""

    def make(**entry):
        link = https_server.add("/e/" + GEM_ZIP, gem_fixtures / GEM_ZIP)
        mail_user.append(export_mail(link, token="tok-sftp"))
        deliver = {
            "url": sshd.url("/~/exports"),
            "ssh_key": str(sshd.keys.ed25519),
            "known_hosts": str(known_hosts),
            "retries": 0,
            **entry,
        }
        deliver = {key: value for key, value in deliver.items() if value is not None}
        data = config_data(
            tmp_path / "state",
            imap_table(mail_user),
            ca_file=tls_ca.ca_file,
            csv=GEM_OPTIONS,
            deliver=[deliver],
        )
        return write_config(tmp_path / "monitors", data)

    return make


def test_run_once_delivers_the_gem_export_over_sftp(tmp_path, mail_user, sshd, sftp_monitor):
    config = sftp_monitor()
    result = run_cli("-c", config, "run", "--once")
    assert result.code == 0, result.stderr
    folder = sshd.home / "exports"
    assert leftovers(folder) == sorted(NAMES.values())
    for kind, name in NAMES.items():
        text = (folder / name).read_text(encoding="utf-8")
        assert (REWRITTEN.get(kind) or UNCHANGED[kind]) in text
    assert f"to 'sftp://127.0.0.1:{sshd.port}/~/exports'" in result.stderr
    assert len(mail_user.list_uids("Archive")) == 1
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger:
        done = ledger.deliveries(state="done")
        assert len(done) == 4
        assert {d.destination for d in done} == {f"sftp://127.0.0.1:{sshd.port}/~/exports"}


def test_a_wrong_password_fails_the_run_in_one_line_without_retrying(sshd, sftp_monitor):
    config = sftp_monitor(ssh_key=None, password_env="SFTP_PASS", retries=3)
    result = run_cli("-c", config, "run", "--once", env={"SFTP_PASS": "wrong-Pw"})
    assert result.code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "login refused" in line]
    assert lines and all("wrong-Pw" not in line for line in result.stderr.splitlines())
    assert "Traceback" not in result.stderr
    assert sshd.log().count(f"Failed password for {USER}") == 1
    assert not (sshd.home / "exports").exists() or leftovers(sshd.home) == []


@pytest.mark.parametrize("point", ["sftp.uploaded", "deliver.placed"])
def test_a_kill_between_upload_and_rename_resumes_without_uploading_again(
    tmp_path, mail_user, sshd, sftp_monitor, point
):
    config = sftp_monitor()
    killed = run_cli("-c", config, "run", "--once", env={ENVIRONMENT: point})
    assert killed.code == -signal.SIGKILL
    folder = sshd.home / "exports"
    first = sorted(NAMES.values())[0]
    left = folder / (first + IN_PROGRESS if point == "sftp.uploaded" else first)
    assert left.exists()
    # Stamp it: an upload would write a new modification time, a rename keeps it.
    os.utime(left, (1_000_000_000, 1_000_000_000))
    finished = run_cli("-c", config, "run", "--once")
    assert finished.code == 0, finished.stderr
    assert leftovers(folder) == sorted(NAMES.values())
    assert (folder / first).stat().st_mtime == 1_000_000_000
    assert "after an interruption" in finished.stderr
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger:
        assert len(ledger.deliveries(state="done")) == 4
    assert len(mail_user.list_uids("Archive")) == 1


def test_describe_and_pins_without_connecting():
    sftp = SftpDestination(
        "sftp.example.com", 2222, "/in", user="exports", password="x",
        host_key="SHA256:" + "A" * 43 + "=", temp=TempNaming(dir="staging"),
    )  # fmt: skip
    assert sftp.describe() == (
        "deliver to sftp://sftp.example.com:2222/in as exports with a password, "
        f"trusting host key SHA256:{'A' * 43}"
    )
    assert sftp.temporary("org/a.csv") == "/in/staging/org/a.csv.in_progress"
    assert normalize_pin("A" * 43) == "SHA256:" + "A" * 43
