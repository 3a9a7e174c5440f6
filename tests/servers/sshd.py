"""A real OpenSSH server (Debian ``openssh-server``) offering SFTP only, for the tests.

:class:`SshServer` writes a temporary ``sshd_config`` and runs ``/usr/sbin/sshd -D -e``
on 127.0.0.1 with a free port and a fresh ed25519 host key. It must run as root (it
logs users in); the tests do. Two system users are created once, idempotently:

* :data:`USER` logs in with a key (:class:`ClientKeys`) or the password
  :data:`PASSWORD`; its login folder is :attr:`SshServer.home` (``internal-sftp -d``);
* :data:`JAIL_USER` (same password, same keys) is chrooted to :attr:`SshServer.jail`
  and may write in ``/upload`` only (:attr:`SshServer.jail_upload`).

Both get SFTP and nothing else (``ForceCommand internal-sftp``). Every file lives
under ``/var/lib/exportmon-tests/sshd-XXXX``: sshd refuses a ``ChrootDirectory``
with any world- or group-writable folder above it (``/tmp`` and ``/var/tmp`` are
1777), and the users must be able to reach their folders, which pytest's
``tmp_path`` (0700) does not allow. :meth:`SshServer.log` holds what sshd logged
(connections, logins, failed passwords); what the SFTP subsystem logs goes to the
client, so tests look at the folders on disk instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from servers import LOCALHOST, ServerStartError, free_port, wait_for_port

SSHD = "/usr/sbin/sshd"
USER = "exportmon-sftp"
JAIL_USER = "exportmon-jail"
#: The password of both users (test accounts, reachable from 127.0.0.1 only while a
#: test's sshd runs).
PASSWORD = "sftp-test-Pw-4711"
#: Passphrase of :attr:`ClientKeys.ed25519_protected`.
PASSPHRASE = "key-passphrase-0815"
#: Root-owned, 0755 all the way up: a valid place for chroot folders.
BASE = Path("/var/lib/exportmon-tests")
_users_ready = False


def _run(*command: str | Path, input: str | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], input=input, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(
            f"{' '.join(map(str, command))} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def _base() -> Path:
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    BASE.chmod(0o755)
    return BASE


def ensure_users() -> None:
    """Create :data:`USER` and :data:`JAIL_USER` if missing and set their password.

    Under a file lock: pytest-xdist workers (and other test runs) may do it at once,
    and ``useradd`` fails while another holds ``/etc/passwd``.
    """
    global _users_ready
    if _users_ready:
        return
    if os.geteuid() != 0:
        raise ServerStartError("the OpenSSH test server needs root (it logs users in)")
    with open(_base() / ".users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in (USER, JAIL_USER):
            try:
                pwd.getpwnam(name)
            except KeyError:
                _run(
                    "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--user-group", name,
                )  # fmt: skip
        # A user without a password ("!") counts as locked: sshd refuses even its keys.
        _run("chpasswd", input="".join(f"{name}:{PASSWORD}\n" for name in (USER, JAIL_USER)))
    _users_ready = True


def _keygen(path: Path, kind: str, *extra: str, passphrase: str = "") -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", kind, *extra, "-N", passphrase, "-C", path.name, "-f", path)


def fingerprint(public_key_file: Path) -> str:
    """``SHA256:...`` of a public key, as ``ssh-keygen -l`` prints it."""
    return _run("ssh-keygen", "-l", "-E", "sha256", "-f", public_key_file).split()[1]


@dataclass(frozen=True)
class ClientKeys:
    """Client key pairs: OpenSSH-format ed25519 and ECDSA, a PEM RSA key, and an
    ed25519 key protected by :data:`PASSPHRASE`; plus one no server trusts."""

    folder: Path

    @classmethod
    def create(cls, folder: Path) -> ClientKeys:
        folder.mkdir(parents=True, exist_ok=True)
        keys = cls(folder)
        _keygen(keys.ed25519, "ed25519")
        _keygen(keys.ecdsa, "ecdsa", "-b", "256")
        _keygen(keys.rsa_pem, "rsa", "-b", "2048", "-m", "PEM")
        _keygen(keys.ed25519_protected, "ed25519", passphrase=PASSPHRASE)
        _keygen(keys.untrusted, "ed25519")
        return keys

    @property
    def ed25519(self) -> Path:
        return self.folder / "id_ed25519"

    @property
    def ecdsa(self) -> Path:
        return self.folder / "id_ecdsa"

    @property
    def rsa_pem(self) -> Path:
        return self.folder / "id_rsa_pem"

    @property
    def ed25519_protected(self) -> Path:
        return self.folder / "id_ed25519_protected"

    @property
    def untrusted(self) -> Path:
        return self.folder / "id_untrusted"

    def authorized(self) -> str:
        """The ``authorized_keys`` lines of every trusted key."""
        trusted = (self.ed25519, self.ecdsa, self.rsa_pem, self.ed25519_protected)
        return "".join(Path(f"{key}.pub").read_text() for key in trusted)


class SshServer:
    """sshd on 127.0.0.1, SFTP only, see the module docstring."""

    def __init__(self, keys: ClientKeys, *, denied: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self.host = LOCALHOST
        self.port = 0
        #: SFTP requests the server refuses (``internal-sftp -P``), e.g. ``posix-rename``
        #: to see a client fall back to the standard RENAME.
        self.denied = denied
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # --- where things are --------------------------------------------------------------

    def _path(self, *parts: str) -> Path:
        if self.folder is None:
            raise RuntimeError("the server has not been started")
        return self.folder.joinpath(*parts)

    @property
    def home(self) -> Path:
        """The login folder of :data:`USER` (``/~`` in an sftp:// URL), on disk."""
        return self._path("home")

    @property
    def jail(self) -> Path:
        """The chroot of :data:`JAIL_USER` (its ``/``), on disk."""
        return self._path("jail")

    @property
    def jail_upload(self) -> Path:
        """``/upload`` in the chroot, the one folder :data:`JAIL_USER` may write in."""
        return self._path("jail", "upload")

    def user_folder(self, relative: str, *, user: str = USER) -> Path:
        """``relative`` below :attr:`home` (or the jail with :data:`JAIL_USER`), made
        with its parents and owned by ``user``, as if that user had made it."""
        entry = pwd.getpwnam(user)
        top = self.home if user == USER else self.jail_upload
        path = top
        for part in Path(relative).parts:
            path = path / part
            path.mkdir(mode=0o755, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    @property
    def host_key(self) -> Path:
        return self._path("ssh_host_ed25519_key")

    @property
    def host_key_fingerprint(self) -> str:
        """``SHA256:...`` of the host key (what ``host_key =`` pins)."""
        return fingerprint(Path(f"{self.host_key}.pub"))

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts names it: ``[127.0.0.1]:PORT``."""
        return f"[{self.host}]:{self.port}"

    def known_hosts_line(self, public_key_file: Path | None = None) -> str:
        """A plain known_hosts line for this server's key (or another key, to fake a
        changed one)."""
        key_type, key = Path(f"{public_key_file or self.host_key}.pub").read_text().split()[:2]
        return f"{self.known_hosts_name} {key_type} {key}\n"

    def keyscan(self, *, hashed: bool = False) -> str:
        """What ``ssh-keyscan -p PORT 127.0.0.1`` (``-H``: hashed) prints: real
        known_hosts lines from the running server."""
        options = ["-H"] if hashed else []
        return _run("ssh-keyscan", *options, "-p", str(self.port), self.host)

    def url(self, path: str = "/~/in", *, user: str = USER) -> str:
        return f"sftp://{user}@{self.host}:{self.port}{path}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self._path("sshd.log").read_text(errors="replace")
        return ""

    # --- running -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if not os.access(SSHD, os.X_OK):
            raise ServerStartError(f"{SSHD} not found: apt-get install openssh-server")
        ensure_users()
        if self.folder is None:
            self._prepare()
        # sshd's privilege separation needs this (the Debian package creates it at boot).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.port = free_port()
        config = self._path("sshd_config")
        config.write_text(self._config())
        with open(self._path("sshd.log"), "ab") as log:  # sshd keeps its own copy
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            wait_for_port(
                self.host, self.port, timeout=15.0, probe=_banner, alive=lambda: self.running
            )
        except TimeoutError as exc:
            self.stop()
            raise ServerStartError(f"sshd did not start: {exc}\n{self.log()}") from None

    def _prepare(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sshd-", dir=_base()))
        self.folder.chmod(0o755)
        _keygen(self.host_key, "ed25519")
        user, jail_user = pwd.getpwnam(USER), pwd.getpwnam(JAIL_USER)
        self.home.mkdir(mode=0o755)
        os.chown(self.home, user.pw_uid, user.pw_gid)
        self.jail.mkdir(mode=0o755)  # root-owned, as a chroot must be
        self.jail_upload.mkdir(mode=0o755)
        os.chown(self.jail_upload, jail_user.pw_uid, jail_user.pw_gid)
        authorized = self._path("authorized_keys")
        authorized.mkdir(mode=0o755)
        for name in (USER, JAIL_USER):
            (authorized / name).write_text(self.keys.authorized())
            (authorized / name).chmod(0o644)

    def _config(self) -> str:
        base = self._path()
        sftp = "internal-sftp" + (f" -P {','.join(self.denied)}" if self.denied else "")
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {base}/sshd.pid",
            f"AuthorizedKeysFile {base}/authorized_keys/%u",
            f"AllowUsers {USER} {JAIL_USER}",
            "UsePAM no",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "UseDNS no",
            "LogLevel VERBOSE",
            # Tests open many connections quickly, some with wrong passwords.
            "MaxStartups 100",
            "MaxAuthTries 10",
            *(["PerSourcePenalties no"] if _version() >= (9, 8) else []),
            f"Subsystem sftp {sftp}",
            f"ForceCommand {sftp} -d {self.home}",
            f"Match User {JAIL_USER}",
            f"    ChrootDirectory {self.jail}",
            f"    ForceCommand {sftp} -d /upload",
        ]
        return "\n".join(lines) + "\n"

    def drop_sessions(self) -> int:
        """Kill (SIGKILL) every session process of this sshd, cutting each client's
        connection as a network failure would; the listener stays. Returns how many."""
        if self._process is None:
            return 0
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    # The parent pid is the 2nd field after the ")" closing the name.
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
        doomed, todo = [], list(children.get(self._process.pid, []))
        while todo:
            pid = todo.pop()
            doomed.append(pid)
            todo.extend(children.get(pid, []))
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(doomed)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remove(self) -> None:
        """Stop and delete every file of this server."""
        self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _banner(sock: socket.socket) -> None:
    """Ready once sshd greets (it may accept before it can serve)."""
    if not sock.recv(64).startswith(b"SSH-2.0-"):
        raise ConnectionError("no SSH banner")


def _version() -> tuple[int, int]:
    done = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)
