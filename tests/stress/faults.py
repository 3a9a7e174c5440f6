"""Server faults: the servers exportmon talks to fail while ``exportmon run`` watches.

Each scenario starts ``exportmon run`` (watching, never restarted), breaks one
server while an export is on its way, lets the server recover, and then checks:

recovered
    the export reached every destination and its mail the archive folder, with
    the same watcher process still running;
lost / duplicated
    every file is at the local folder and on the FTPS server once, with the right
    bytes, renamed into place on the FTPS server by exactly one ``RNTO``; no
    ``.in_progress`` file is left; the mail is in the archive folder once (for the
    SMTP scenario: the alert mail arrived, once);
reported
    the outage left exactly one line in the monitor's log file at level ERROR
    (for the SMTP scenario, where an unsent alert is a WARNING: one WARNING);
    retries while it lasted are INFO "still failing" lines at most.

The world (:class:`FaultWorld`): IMAP over TLS through a :class:`~servers.proxy.TcpProxy`
(so connections can be cut in the middle of a FETCH or an IDLE) to Dovecot,
exports from the HTTPS fixture, delivery to a local folder and the FTPS fixture,
alerts by SMTP, and short intervals (``poll_interval``, ``retry_after``, timeouts)
so that a recovery takes seconds.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetchkit import config_data, export_mail, imap_table, write_config
from watching import Watcher, wait_for, wait_for_cycles

from servers.proxy import TcpProxy

#: Long enough for any recovery here (back-off after a few failures is 8-16 s).
RECOVERY_TIMEOUT = 90.0
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) \[(?P<monitor>[^\]]*)\] (?P<message>.*)$")


@dataclass
class FaultResult:
    """What one scenario found."""

    scenario: str
    recovered: bool = False
    lost: int = 0
    duplicated: int = 0
    #: Log lines reporting the outage (ERROR; WARNING for the unsent alert).
    reported: int = 0
    still_failing: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


class FaultWorld:
    """One monitor, watched by ``exportmon run``; see the module documentation."""

    def __init__(
        self,
        workdir: Path,
        *,
        dovecot: Any,
        mail_user: Any,
        https_server: Any,
        ftps_server: Any,
        smtp_server: Any,
        tls_ca: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.dovecot = dovecot
        self.mail_user = mail_user
        self.https = https_server
        self.ftps = ftps_server
        self.smtp = smtp_server
        self.proxy = TcpProxy(mail_user.host, mail_user.ports.imaps)
        self.proxy.start()
        self.local = self.workdir / "delivered"
        self.state = self.workdir / "state"
        self.files: dict[str, bytes] = {}
        self.tokens = 0
        self.watcher: Watcher | None = None
        data = config_data(
            self.state,
            imap_table(mail_user, port=self.proxy.port, timeout="10s"),
            ca_file=tls_ca.ca_file,
            poll_interval="1s",
            retry_after="1s",
            download={"timeout": "2s", "retries": 1},
            deliver={
                "to": str(self.local),
                "ftp_url": f"ftps://127.0.0.1:{ftps_server.port}",
                "ftp_dir": "in",
                "ftp_user": ftps_server.user,
                "ftp_password_env": "EXPORTMON_FAULTS_FTP_PASS",
                "ftp_ca_file": str(tls_ca.ca_file),
                "ftp_retries": 1,
                "ftp_timeout": "10s",
            },
            alerts={
                "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
                "smtp_user": smtp_server.user,
                "smtp_password_env": "EXPORTMON_FAULTS_SMTP_PASS",
                "smtp_ca_file": str(tls_ca.ca_file),
                "from": "exportmon@example.com",
                "to": ["ops@example.com"],
                "recovery": False,
            },
        )
        self.config = write_config(self.workdir / "monitors", data, "777")
        self.env = {
            "EXPORTMON_FAULTS_FTP_PASS": ftps_server.password,
            "EXPORTMON_FAULTS_SMTP_PASS": smtp_server.password,
        }
        self.log_file = self.state / "log" / "export_monitor.777.log"

    # -- the watcher ---------------------------------------------------------------

    def watch(self) -> Watcher:
        """Start ``exportmon run`` and give it time to finish its first (empty) cycle."""
        self.watcher = Watcher(self.config, env=self.env)
        wait_for(lambda: "watching" in self.log(), timeout=30)
        wait_for_cycles(self.log_file)
        return self.watcher

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.kill()
        self.proxy.stop()

    def stop_watching(self) -> str:
        assert self.watcher is not None
        code, err = self.watcher.stop()
        self.watcher = None
        if code != 0:
            raise AssertionError(f"exportmon run ended with {code}:\n{err}")
        return err

    def alive(self) -> bool:
        return self.watcher is not None and self.watcher.process.poll() is None

    # -- exports -------------------------------------------------------------------

    def add_export(self, size: int = 200_000, **route: Any) -> str:
        """Put an export CSV of ``size`` bytes on the HTTPS server (``route`` as for
        ``WebServer.add``) and mail its link; return its file name."""
        self.tokens += 1
        name = f"777-20261123-{self.tokens:06d}-requests.csv"
        body = _csv(size, self.tokens)
        self.files[name] = body
        link = self.https.add(f"/exports/{self.tokens}/{name}", body, **route)
        self.mail_user.append(export_mail(link, token=f"tok-{self.tokens}"))
        return name

    def add_attachment_export(self, size: int) -> str:
        """Mail an export as an attached CSV of ``size`` bytes; return its file name."""
        self.tokens += 1
        name = f"777-20261123-{self.tokens:06d}-cis.csv"
        body = _csv(size, self.tokens)
        self.files[name] = body
        mail = export_mail(None, token=f"tok-{self.tokens}", attachments=[(name, body)])
        self.mail_user.append(mail)
        return name

    def fix_route(self, name: str) -> None:
        """Serve ``name`` plainly from now on (the HTTPS server recovered)."""
        number = int(name.split("-")[2])
        self.https.add(f"/exports/{number}/{name}", self.files[name])

    def delivered(self) -> bool:
        """Every export is at both destinations and every mail archived."""
        if not self.files:
            return False
        for name, body in self.files.items():
            for folder in (self.local, self.ftps.home / "in"):
                path = folder / name
                if not path.is_file() or path.read_bytes() != body:
                    return False
        return self._archived() >= self.tokens

    def _archived(self) -> int:
        try:
            if "Archive" not in self.mail_user.mailboxes():
                return 0
            return len(self.mail_user.list_uids("Archive"))
        except OSError:  # Dovecot is down in this moment
            return 0

    def wait_delivered(self, timeout: float = RECOVERY_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.delivered():
                return True
            if not self.alive():
                return False
            time.sleep(0.2)
        return False

    # -- checking ------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self, *levels: str) -> list[str]:
        found = []
        for line in self.log().splitlines():
            match = LOG_LINE.match(line)
            if match and match.group("level") in levels:
                found.append(match.group("message"))
        return found

    def check(self, result: FaultResult, *, reported_levels: tuple[str, ...] = ("ERROR",)) -> None:
        """Fill in lost, duplicated and reported (see the module docs)."""
        for name, body in self.files.items():
            for place, folder in (("local", self.local), ("ftp", self.ftps.home / "in")):
                path = folder / name
                if not path.is_file():
                    result.lost += 1
                    result.problems.append(f"{place}: {name} missing")
                elif hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(body).digest():
                    result.lost += 1
                    result.problems.append(f"{place}: {name} has the wrong bytes")
        for folder in (self.local, self.ftps.home / "in"):
            for path in folder.rglob("*"):
                if path.is_file() and path.name not in self.files:
                    result.problems.append(f"left over: {path}")
        renames = Counter(
            c.path for c in self.ftps.commands_named("RNTO") if c.code == 250 and c.path
        )
        for path, count in renames.items():
            if count > 1:
                result.duplicated += count - 1
                result.problems.append(f"ftp: {path} renamed into place {count} times")
        archived = self._archived()
        if archived != self.tokens:
            result.problems.append(f"{archived} mails archived, {self.tokens} expected")
            result.duplicated += max(0, archived - self.tokens)
        reports = self.lines(*reported_levels)
        result.reported = len(reports)
        result.still_failing = sum("still failing" in line for line in self.lines("INFO"))
        if result.reported != 1:
            result.problems.append(f"reported {result.reported} times: {reports}")


def _csv(size: int, seed: int) -> bytes:
    lines = [b"id,value"]
    total = 9
    number = 0
    while total < size:
        number += 1
        line = b"%d,%d" % (number, (number * 7919 + seed) % 100_003)
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


# --- the scenarios -------------------------------------------------------------------


def imap_server_restarted(world: FaultWorld) -> FaultResult:
    """Dovecot stopped while an export is delivered (its mail cannot be archived), and
    started again a few seconds later."""
    scenario = "IMAP server stopped and restarted while watching"
    return _stopped_mid_upload(world, scenario, world.dovecot, 300_000)


def fetch_connection_dropped(world: FaultWorld) -> FaultResult:
    """The IMAP connection is cut in the middle of the FETCH of a large mail."""
    result = FaultResult("IMAP connection dropped during FETCH")
    world.watch()
    world.proxy.throttle(1_000_000)
    world.proxy.cut_after(1_000_000)
    world.add_attachment_export(3_000_000)
    wait_for(lambda: world.proxy.cuts, timeout=30)
    world.proxy.throttle(None)
    result.recovered = world.wait_delivered()
    return result


def idle_connection_dropped(world: FaultWorld) -> FaultResult:
    """The IMAP connection is cut while the watcher waits in IDLE."""
    result = FaultResult("IMAP connection dropped during IDLE")
    world.watch()
    if world.proxy.cut_all() < 1:
        result.problems.append("no IMAP connection was open to cut")
    reported = wait_for(lambda: world.lines("ERROR"), timeout=30)
    if not any("waiting for new mail" in line or "closed the" in line for line in reported):
        result.problems.append(f"the cut did not land in IDLE: {reported}")
    world.add_export(20_000)
    result.recovered = world.wait_delivered()
    return result


def ftp_server_restarted(world: FaultWorld) -> FaultResult:
    """The FTPS server stops in the middle of an upload and comes back a few seconds later."""
    return _stopped_mid_upload(world, "FTPS server stopped mid-upload and restarted", world.ftps)


def _stopped_mid_upload(
    world: FaultWorld, scenario: str, server: Any, size: int = 400_000
) -> FaultResult:
    """``server`` stopped for 4 s while an export of ``size`` bytes is uploaded (slowly)."""
    result = FaultResult(scenario)
    world.ftps.slow_uploads(100_000)
    world.watch()
    world.add_export(size)
    wait_for(lambda: uploading(world.ftps.home / "in"), timeout=30)
    server.stop()
    # The server stays down until the watcher has reported the failed upload.
    wait_for(lambda: world.lines("ERROR"), timeout=60)
    world.ftps.slow_uploads(None)
    server.start()
    result.recovered = world.wait_delivered()
    return result


def uploading(folder: Path) -> bool:
    """Whether an upload into ``folder`` has begun and not yet been renamed into place."""
    for path in folder.glob("*.in_progress"):
        try:
            if path.stat().st_size:
                return True
        except FileNotFoundError:  # renamed in the meantime
            pass
    return False


def https_stalls(world: FaultWorld) -> FaultResult:
    """The export server sends the headers, then nothing, until it is fixed."""
    return _broken_until_fixed(world, "HTTPS server stalls", stall=True, stall_after=10_000)


def https_resets(world: FaultWorld) -> FaultResult:
    """The export server resets the connection (TCP RST) mid-body, four times in a row."""
    result = FaultResult("HTTPS server resets the connection")
    world.watch()
    world.add_export(300_000, drop_after=50_000, drop_reset=True, drop_times=4)
    result.recovered = world.wait_delivered()
    return result


def https_short_body(world: FaultWorld) -> FaultResult:
    """The export server promises more bytes than it sends, until it is fixed."""
    return _broken_until_fixed(
        world, "HTTPS server sends fewer bytes than promised", wrong_length=150_000
    )


def _broken_until_fixed(world: FaultWorld, scenario: str, **route: Any) -> FaultResult:
    """An export served broken (``route`` as for ``WebServer.add``) until the download has
    failed and a retry or two went by, then served plainly."""
    result = FaultResult(scenario)
    world.watch()
    name = world.add_export(100_000, **route)
    wait_for(lambda: world.lines("ERROR"), timeout=60)
    # Broken until an automatic retry has failed too.
    wait_for(lambda: "still failing" in world.log(), timeout=60)
    world.fix_route(name)
    result.recovered = world.wait_delivered()
    return result


def smtp_down_for_an_alert(world: FaultWorld) -> FaultResult:
    """The SMTP server is down when an export fails; the alert is sent once it is back."""
    result = FaultResult("SMTP server down when an alert is due")
    world.watch()
    world.smtp.stop()
    world.tokens += 1
    # A link to nothing: the export fails for good (404) and an alert is due.
    link = world.https.url(f"/exports/{world.tokens}/777-missing-requests.csv")
    world.mail_user.append(export_mail(link, token=f"tok-{world.tokens}"))
    wait_for(lambda: any("not sent" in line for line in world.lines("WARNING")), timeout=60)
    wait_for_cycles(world.log_file)  # down for one more cycle
    world.smtp.start()
    try:
        world.smtp.wait_for_messages(1, timeout=RECOVERY_TIMEOUT)
    except TimeoutError:
        result.problems.append("the alert was never sent")
    else:
        result.recovered = world.alive()
    wait_for_cycles(world.log_file)  # a cycle later, a second alert would be there
    alerts = [m for m in world.smtp.messages if "777" in str(m.message["Subject"])]
    if len(alerts) != 1:
        result.duplicated += max(0, len(alerts) - 1)
        result.lost += 1 if not alerts else 0
        result.problems.append(f"{len(alerts)} alert mails arrived, 1 expected")
    sent = [line for line in world.lines("WARNING") if "not sent" in line]
    result.reported = len(sent)
    if result.reported != 1:
        result.problems.append(f"the unsent alert was reported {result.reported} times: {sent}")
    return result


#: Every scenario; the SMTP one checks its own figures.
SCENARIOS: list[Callable[[FaultWorld], FaultResult]] = [
    imap_server_restarted,
    fetch_connection_dropped,
    idle_connection_dropped,
    ftp_server_restarted,
    https_stalls,
    https_resets,
    https_short_body,
    smtp_down_for_an_alert,
]


def run_scenario(scenario: Callable[[FaultWorld], FaultResult], world: FaultWorld) -> FaultResult:
    """Run one scenario in ``world``, check it, stop the watcher; the result says it all."""
    started = time.monotonic()
    try:
        result = scenario(world)
        if scenario is not smtp_down_for_an_alert:
            world.check(result)
        if not world.alive():
            result.recovered = False
            result.problems.append("exportmon run is no longer running")
        else:
            world.stop_watching()
    finally:
        world.close()
    result.seconds = time.monotonic() - started
    if not result.recovered:
        result.problems.append("not recovered; log:\n" + world.log())
    return result


def table(results: list[FaultResult]) -> str:
    """Results (one or more runs per scenario) as a Markdown table."""
    by_name: dict[str, list[FaultResult]] = {}
    for result in results:
        by_name.setdefault(result.scenario, []).append(result)
    lines = [
        "| scenario | runs | recovered | lost | duplicated | reported (per outage) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, runs in by_name.items():
        reported = sorted({r.reported for r in runs})
        lines.append(
            f"| {name} | {len(runs)} | {sum(r.recovered for r in runs)} | "
            f"{sum(r.lost for r in runs)} | {sum(r.duplicated for r in runs)} | "
            f"{', '.join(map(str, reported))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.stress faults``: every scenario, ``--repeat`` times."""
    import argparse
    import tempfile

    from servers.ftp import FtpServer
    from servers.smtp import SmtpServer
    from stress.servers import running_servers

    parser = argparse.ArgumentParser(prog="python -m tests.stress faults", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--only", help="run only scenarios whose function name contains this")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-faults-"))
    results = []
    with running_servers(workdir) as servers:
        for round_ in range(args.repeat):
            for scenario in SCENARIOS:
                if args.only and args.only not in scenario.__name__:
                    continue
                if not servers.dovecot.running:
                    servers.dovecot.start()
                place = workdir / f"{scenario.__name__}-{round_}"
                ca = servers.tls_ca
                # A fresh FTPS and SMTP server each time: their records are per scenario.
                with (
                    FtpServer(place / "ftps-home", cert=ca.server, ca_file=ca.ca_file) as ftps,
                    SmtpServer(cert=ca.server, ca_file=ca.ca_file) as smtp,
                ):
                    world = FaultWorld(
                        place,
                        dovecot=servers.dovecot,
                        mail_user=servers.dovecot.add_user(),
                        https_server=servers.https_server,
                        ftps_server=ftps,
                        smtp_server=smtp,
                        tls_ca=ca,
                    )
                    result = run_scenario(scenario, world)
                results.append(result)
                status = "ok" if not result.problems else "PROBLEMS"
                print(f"{result.scenario}: {status} ({result.seconds:.0f} s)", flush=True)
                for problem in result.problems:
                    print("  " + problem, flush=True)
    print()
    print(table(results))
    return 1 if any(r.problems for r in results) else 0
