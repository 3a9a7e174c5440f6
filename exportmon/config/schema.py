"""The monitor config: one TOML file per monitor, described by these dataclasses.

Field types drive validation in :mod:`exportmon.config.load`: plain ``str``,
``int``, ``float``, ``bool``, ``Literal[...]``, ``list[...]``, ``dict[str, int]``,
optional values and nested tables. ``metadata`` adds a parser for units
(``"duration"``, ``"size"``, ``"char"``) and marks secrets (``secret=True``).

Every option of the itrp-export-monitor gem has a home here; the README's
"Configuration" section maps the gem's names to these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from exportmon.hooks.credentials import SecretSource
from exportmon.paths import MonitorDirs

#: The gem's search: mails from ITRP that carry an export id header.
ITRP_SEARCH = 'FROM ITRP HEADER X-ITRP-ExportID ""'

SourceKind = Literal["imap", "pop3", "maildir", "mbox", "dir", "graph", "folder"]
Security = Literal["ssl", "starttls", "plain"]
Quoting = Literal["minimal", "all", "nonnumeric", "none", "gem"]
Overwrite = Literal["replace", "keep", "timestamp"]
NoticeOn = Literal["failure", "recovery", "missing", "success", "summary"]
HeartbeatKind = Literal["healthchecks", "uptime-kuma", "cronitor"]


def _duration(default: float | None, doc: str) -> float | None:
    return field(default=default, metadata={"kind": "duration", "doc": doc})


def _size(default: int | None, doc: str) -> int | None:
    return field(default=default, metadata={"kind": "size", "doc": doc})


def _secret(doc: str) -> str | None:
    return field(default=None, metadata={"secret": True, "doc": doc})


@dataclass
class SourceConfig:
    """``[source]``: where export mails are read from."""

    kind: SourceKind = "imap"
    host: str = ""
    #: 0 means the standard port for ``kind`` and ``security``.
    port: int = 0
    security: Security = "ssl"
    user: str = ""
    password: str | None = _secret("IMAP/POP3 password (prefer password_command or password_env)")
    password_command: str | None = None
    password_env: str | None = None
    #: ``password`` logs in with a password; ``oauth2`` with exportmon's own OAuth2
    #: sign-in (``exportmon login``, the ``oauth_*`` options); ``xoauth2`` and
    #: ``oauthbearer`` with a token printed by ``token_command``.
    auth: Literal["password", "xoauth2", "oauthbearer", "oauth2"] = "password"
    token_command: str | None = None
    #: ``auth = "oauth2"``: microsoft, google or custom (the oauth_*_url endpoints);
    #: unset: guessed from the host (Microsoft for kind = "graph").
    oauth_provider: Literal["microsoft", "google", "custom"] | None = None
    #: How ``exportmon login`` signs in; unset: device, or browser for Google.
    oauth_flow: Literal["device", "browser", "client-credentials"] | None = None
    #: The client (application) id of the app registered with the provider.
    oauth_client_id: str = ""
    #: Microsoft only: the tenant (directory) id or domain.
    oauth_tenant: str = "common"
    oauth_client_secret: str | None = _secret(
        "the app's client secret (client-credentials, Google's installed apps)"
    )
    oauth_client_secret_command: str | None = None
    oauth_client_secret_env: str | None = None
    #: The scopes asked for; empty: the provider's mail scopes.
    oauth_scopes: list[str] = field(
        default_factory=list, metadata={"doc": "OAuth2 scopes; empty: the provider's defaults"}
    )
    #: Endpoints of a custom provider (token; device or authorize for the flow).
    oauth_token_url: str | None = None
    oauth_device_url: str | None = None
    oauth_authorize_url: str | None = None
    #: ``kind = "graph"``: the Microsoft Graph API's base address.
    graph_url: str = "https://graph.microsoft.com/v1.0"
    mailbox: str = "INBOX"
    #: Folder processed mails are moved to; empty means leave them where they are.
    archive: str = "[Gmail]/All Mail"
    search: str = ITRP_SEARCH
    ca_file: str | None = None
    #: Maildir, mbox file or directory of ``.eml`` files (kinds maildir, mbox, dir), or
    #: the folder watched for export files (kind folder).
    path: str | None = None
    timeout: float | None = _duration(60.0, "network timeout")
    #: POP3 only: delete a mail from the server once its export is delivered.
    delete_after: bool = False
    #: Only mails from these addresses (or ``@domain``) are processed; empty allows all.
    allowed_senders: list[str] = field(
        default_factory=list,
        metadata={"doc": "sender addresses or @domains allowed to send exports"},
    )
    #: Also look for export mails forwarded as ``message/rfc822`` attachments.
    accept_forwarded: bool = False

    # kind = "folder": export files dropped into the folder ``path`` (docs/folder.md).
    # ``archive`` is then the folder originals are moved to after delivery (relative:
    # inside ``path``; "" leaves them), and it must be set: the IMAP default is no folder.
    #: Which files of the folder are exports (shell patterns, any letter case).
    patterns: list[str] = field(
        default_factory=lambda: ["*.csv", "*.zip"],
        metadata={"doc": "file names taken as exports (shell patterns)"},
    )
    settle: float | None = _duration(
        30.0, "a dropped file is taken once its size and mtime are unchanged this long"
    )
    #: ``"{name}.done"``: a file is taken only once this file exists (removed then).
    trigger: str | None = None
    #: The export id dropped files count as (default: the only one in ``ids``).
    export_id: int | None = None
    #: The header row's column separator; unset: sniffed from the row.
    header_sep: str | None = None

    def password_source(self) -> SecretSource:
        return SecretSource(
            "source.password", self.password, self.password_env, self.password_command
        )

    def oauth_client_secret_source(self) -> SecretSource:
        return SecretSource(
            "source.oauth_client_secret",
            self.oauth_client_secret,
            self.oauth_client_secret_env,
            self.oauth_client_secret_command,
        )

    def default_port(self) -> int:
        if self.port:
            return self.port
        if self.kind == "pop3":
            return 995 if self.security == "ssl" else 110
        return 993 if self.security == "ssl" else 143


@dataclass
class RecognizerConfig:
    """``[[recognizers]]``: how to spot export mails of a system other than ITRP."""

    name: str = ""
    #: Header holding the export id (an integer).
    id_header: str | None = None
    #: Header holding a token unique to each export file.
    token_header: str | None = None
    #: Regular expression the subject must match; a group ``(?P<id>...)`` may give the id.
    subject_pattern: str | None = None
    #: Regular expression for the download link in the body (default: first http(s) link).
    link_pattern: str | None = None
    #: Export id to use when the mail carries none.
    export_id: int | None = None
    #: Take attached ``.csv``/``.zip`` files as the export.
    attachments: bool = True


@dataclass
class TypeConfig:
    """``[[types]]``: how a dropped file's export type is told (``kind = "folder"``)."""

    name: str = ""
    #: Column names that must all be in the file's header row.
    header_has: list[str] = field(
        default_factory=list, metadata={"doc": "column names the header row must all have"}
    )
    #: Regular expression searched for in the file name.
    name_pattern: str | None = None


@dataclass
class DownloadConfig:
    """``[download]``: how export links are downloaded."""

    ca_file: str | None = None
    timeout: float | None = _duration(60.0, "connect and read timeout")
    retries: int = 3
    max_bytes: int | None = _size(10 * 1000**3, "largest download accepted")
    #: Hosts allowed even though they resolve to private or loopback addresses.
    allow_hosts: list[str] = field(
        default_factory=list,
        metadata={"doc": "hosts allowed despite private addresses (on-premise)"},
    )
    max_redirects: int = 5
    #: Every download ends within this time, all attempts and waits together.
    deadline: float | None = _duration(
        3600.0, "longest a download may take, all attempts together; then it fails"
    )
    #: A transfer slower than this over a ``timeout``-long window is cut and retried.
    min_rate: int | None = _size(
        10_000, "slowest transfer accepted, bytes per second over each timeout window"
    )


@dataclass
class ZipConfig:
    """``[zip]``: limits that make hostile archives (zip bombs) fail safely."""

    max_entry_bytes: int | None = _size(20 * 1000**3, "largest uncompressed entry")
    max_total_bytes: int | None = _size(50 * 1000**3, "largest uncompressed archive")
    max_ratio: float = 250.0
    max_entries: int = 10_000


@dataclass
class CsvConfig:
    """``[csv]``: rewrite the CSV files into another dialect (needs ``unzip = true``)."""

    #: ``None`` keeps each row's own line ending (the gem's ``:auto``).
    row_sep: str | None = None
    col_sep: str = ","
    quote_char: str = field(default='"', metadata={"kind": "char"})
    #: ``gem`` reproduces itrp-export-monitor's output: empty values written as two
    #: quote characters, values quoted only when they hold a separator, quote or newline.
    quoting: Quoting = "minimal"
    encoding: str = "utf-8-sig"
    output_encoding: str = "utf-8"
    #: Text that replaces ``\r\n`` and ``\n`` inside values.
    replace_newlines: str | None = None
    #: ``module:function`` called on every value (the gem's ``csv_value_proc``).
    value_hook: str | None = None
    #: Header names of the columns written, in this order; other columns are dropped.
    columns: list[str] | None = field(
        default=None,
        metadata={
            "doc": "header names of the columns written, in this order (others are dropped)",
            "example": ["id", "name", "email"],
        },
    )
    #: Header names replaced in the output, ``{ old = "new" }``.
    rename: dict[str, str] | None = field(
        default=None,
        metadata={"doc": "header names replaced in the output", "example": {"ITRP ID": "id"}},
    )
    #: A column of ``columns`` missing from a file's header: ``error`` fails that file,
    #: ``empty`` writes the column empty.
    missing: Literal["error", "empty"] = field(
        default="error",
        metadata={"doc": "a column of columns missing from a file's header: error or empty"},
    )
    #: Drop the tab or apostrophe exporting systems put before values starting with
    #: ``=``, ``+``, ``-`` or ``@`` (a spreadsheet formula guard).
    strip_formula_guard: bool = field(
        default=False,
        metadata={"doc": "drop the tab or ' put before values starting with = + - @"},
    )


@dataclass
class DeliverConfig:
    """``[deliver]``: where the files go."""

    #: Local destination folder.
    to: str | None = None
    #: ``ftp://host[:port]`` or ``ftps://host[:port]`` (explicit TLS).
    ftp_url: str | None = None
    ftp_dir: str = "."
    ftp_user: str | None = None
    ftp_password: str | None = _secret("FTP password (prefer ftp_password_command or _env)")
    ftp_password_command: str | None = None
    ftp_password_env: str | None = None
    ftp_ca_file: str | None = None
    ftp_passive: bool = True
    ftp_timeout: float | None = _duration(60.0, "FTP timeout")
    ftp_retries: int = 3
    overwrite: Overwrite = "replace"
    #: Export types delivered first, in this order; the rest follow alphabetically.
    order: list[str] = field(
        default_factory=list, metadata={"doc": "export types delivered first, in this order"}
    )
    #: Keep a timestamped copy of every delivered file here.
    archive_dir: str | None = None

    def destinations(self) -> list[DestinationConfig]:
        """This table as ``[[deliver]]`` entries: ``to``, ``ftp_url`` (with ``ftp_dir``)
        and, when either is set, ``archive_dir`` as a time-stamped copy. The FTP URL
        is written the way :class:`~exportmon.deliver.ftp.FtpDestination` labels it,
        so ledgers written before keep matching."""
        found: list[DestinationConfig] = []
        if self.to:
            found.append(DestinationConfig(url=self.to, overwrite=self.overwrite, order=self.order))
        if self.ftp_url:
            # The URL's path is the folder below the login folder; "//abs" is absolute.
            found.append(
                DestinationConfig(
                    url=self.ftp_url.strip().rstrip("/") + "/" + (self.ftp_dir or "."),
                    user=self.ftp_user,
                    password=self.ftp_password,
                    password_env=self.ftp_password_env,
                    password_command=self.ftp_password_command,
                    ca_file=self.ftp_ca_file,
                    passive=self.ftp_passive,
                    timeout=self.ftp_timeout,
                    retries=self.ftp_retries,
                    overwrite=self.overwrite,
                    order=self.order,
                    key="deliver.ftp_",
                )
            )
        if found and self.archive_dir:
            found.append(
                DestinationConfig(
                    url=self.archive_dir, overwrite="timestamp", order=self.order, archive=True
                )
            )
        return found

    def ftp_password_source(self) -> SecretSource:
        return SecretSource(
            "deliver.ftp_password",
            self.ftp_password,
            self.ftp_password_env,
            self.ftp_password_command,
        )


TempNaming = Literal["suffix", "prefix", "dir"]
Trigger = Literal["file", "export"]
Manifest = Literal["json", "csv"]


def _path(doc: str, default: str | None = None) -> str | None:
    """A file or folder option: ``~`` and ``$VAR`` expanded, relative to the config file."""
    return field(default=default, metadata={"path": True, "doc": doc})


@dataclass
class DestinationConfig:
    """``[[deliver]]``: one destination, named by its ``url``.

    ``url`` is a local folder (``/srv/in``, ``file:///srv/in``), ``ftp://``,
    ``ftps://``, ``sftp://`` or ``https://``; the rest are that destination's own
    options (each kind reads the ones that apply to it). The old ``[deliver]``
    table is turned into a list of these at load (:func:`DeliverConfig.destinations`).
    """

    url: str = ""
    #: Login name (FTP, SFTP, HTTPS basic); may also be the URL's ``user@``.
    user: str | None = None
    password: str | None = _secret("password (prefer password_env or password_command)")
    password_env: str | None = None
    password_command: str | None = None
    #: HTTPS: a bearer token instead of user and password.
    token: str | None = _secret("HTTPS bearer token (prefer token_env or token_command)")
    token_env: str | None = None
    token_command: str | None = None
    #: SFTP: the private key (OpenSSH or PEM); its passphrase, if any, as a secret.
    ssh_key: str | None = _path("SFTP private key file")
    ssh_key_passphrase: str | None = _secret("passphrase of ssh_key")
    ssh_key_passphrase_env: str | None = None
    ssh_key_passphrase_command: str | None = None
    #: SFTP: host keys trusted (OpenSSH format), unless ``host_key`` pins one.
    known_hosts: str | None = _path("OpenSSH known_hosts file", "~/.ssh/known_hosts")
    #: SFTP: the one host key accepted, as ``SHA256:...`` (ssh-keygen -l).
    host_key: str | None = None
    #: HTTPS: ``POST`` or ``PUT``; the body is the file (``raw``) or a form (``multipart``).
    method: Literal["POST", "PUT"] = "POST"
    body: Literal["raw", "multipart"] = "raw"
    multipart_field: str = "file"
    headers: dict[str, str] = field(
        default_factory=dict, metadata={"doc": "extra HTTP request headers"}
    )
    #: HTTPS: the receiving system's processing reference in the answer: a regular
    #: expression with a group ``(?P<ref>...)``, or a JSON pointer (``/id``).
    reference: str | None = None
    #: HTTPS: polled until ``status_done`` holds; may contain ``{reference}``.
    status_url: str | None = None
    status_done: str | None = None
    status_fail: str | None = None
    status_warn: str | None = None
    status_interval: float | None = _duration(30.0, "time between status polls")
    status_timeout: float | None = _duration(24 * 3600.0, "give up polling after this long")
    overwrite: Overwrite = "replace"
    #: Export types delivered first, in this order; the rest follow alphabetically.
    order: list[str] = field(
        default_factory=list, metadata={"doc": "export types delivered first, in this order"}
    )
    #: A file is written under a temporary name first: ``<name><temp_suffix>``,
    #: ``<temp_prefix><name>``, or in ``temp_dir`` (on the same server) and moved out.
    temp_suffix: str = ".in_progress"
    temp_prefix: str = ""
    temp_dir: str | None = None
    #: Trigger files written after the data: one per file or one per export.
    trigger: Trigger | None = None
    trigger_name: str = "{name}.done"
    #: The trigger holds the row count and SHA-256 of what it announces.
    trigger_content: bool = False
    #: A manifest per export (files, sizes, rows, SHA-256), written last, atomically.
    manifest: Manifest | None = None
    manifest_name: str = "{export}.manifest.{format}"
    retries: int = 3
    timeout: float | None = _duration(60.0, "network timeout")
    ca_file: str | None = _path("CA certificates trusted for TLS")
    #: FTP: passive mode.
    passive: bool = True
    #: A time-stamped copy of every file (the old ``deliver.archive_dir``).
    archive: bool = False
    #: How messages name this entry's keys: ``deliver[0].`` (``deliver.ftp_`` for the
    #: old table's FTP server), so an error names the key the user wrote.
    key: str = field(default="deliver.", metadata={"derived": True})

    def password_source(self) -> SecretSource:
        return SecretSource(
            self.key + "password", self.password, self.password_env, self.password_command
        )

    def token_source(self) -> SecretSource:
        return SecretSource(self.key + "token", self.token, self.token_env, self.token_command)

    def passphrase_source(self) -> SecretSource:
        return SecretSource(
            self.key + "ssh_key_passphrase",
            self.ssh_key_passphrase,
            self.ssh_key_passphrase_env,
            self.ssh_key_passphrase_command,
        )


@dataclass
class AlertsConfig:
    """``[alerts]``: who hears about failures (the gem's ``on_exception``)."""

    #: ``smtp://host:25``, ``smtps://host:465`` or ``submission://host:587`` (STARTTLS).
    smtp_url: str | None = None
    smtp_user: str | None = None
    #: ``password`` logs in with smtp_user and the SMTP password; ``oauth2`` with
    #: XOAUTH2 and the monitor's own sign-in (``[source] auth = "oauth2"``, ``exportmon
    #: login``), as ``smtp_user`` or else the mailbox's ``[source] user``.
    smtp_auth: Literal["password", "oauth2"] = "password"
    smtp_password: str | None = _secret("SMTP password")
    smtp_password_command: str | None = None
    smtp_password_env: str | None = None
    smtp_ca_file: str | None = None
    from_: str | None = field(default=None, metadata={"toml": "from"})
    to: list[str] = field(default_factory=list, metadata={"doc": "alert recipients"})
    #: Shell command run with the alert as JSON on stdin and in EXPORTMON_* variables.
    command: str | None = None
    #: An unresolved failure is alerted again after this long.
    repeat_after: float | None = _duration(24 * 3600.0, "repeat interval of an alert")
    #: Send a notice when a failing monitor succeeds again.
    recovery: bool = True
    #: Apprise URLs (Slack, Teams, ntfy, Matrix, json://, ...); they hold tokens.
    notify: list[str] = field(
        default_factory=list,
        metadata={"secret": True, "doc": "Apprise URLs notices are sent to"},
    )
    #: Environment variable holding the Apprise URLs (separated by spaces, commas, new lines).
    notify_env: str | None = None
    #: Command printing the Apprise URLs.
    notify_command: str | None = None
    #: Which notices are sent: failure, recovery, missing, success, summary.
    on: list[NoticeOn] = field(
        default_factory=lambda: ["failure", "recovery", "missing"],
        metadata={"doc": "notices to send: failure, recovery, missing, success, summary"},
    )

    def smtp_password_source(self) -> SecretSource:
        return SecretSource(
            "alerts.smtp_password",
            self.smtp_password,
            self.smtp_password_env,
            self.smtp_password_command,
        )

    def notify_source(self) -> SecretSource:
        value = "\n".join(self.notify) if self.notify else None
        return SecretSource("alerts.notify", value, self.notify_env, self.notify_command)


@dataclass
class HeartbeatConfig:
    """``[heartbeat]``: pings to an outside monitoring service (Healthchecks, Uptime Kuma,
    Cronitor), which raises the alarm when they stop."""

    #: The check's ping URL; it holds the check's key, so it is a secret.
    url: str | None = _secret("ping URL of the check (prefer url_env or url_command)")
    url_env: str | None = None
    url_command: str | None = None
    kind: HeartbeatKind = "healthchecks"
    timeout: float | None = _duration(10.0, "how long one ping may take")

    @property
    def configured(self) -> bool:
        return bool(self.url or self.url_env or self.url_command)

    def url_source(self) -> SecretSource:
        return SecretSource("heartbeat.url", self.url, self.url_env, self.url_command)


@dataclass
class ExportExpectation:
    """``[exports.<id>]``: what a healthy export looks like (missing-export alerts)."""

    #: ``"1d"``, ``"1w"`` or a 5-field cron expression.
    expect_every: str | None = None
    grace: float | None = _duration(3600.0, "how late an export may be")
    #: Per export type, e.g. ``{ people = 100 }``.
    min_rows: dict[str, int] = field(default_factory=dict)
    max_rows: dict[str, int] = field(default_factory=dict)


@dataclass
class MonitorConfig:
    """One monitor: the top level of its TOML file."""

    #: The file's stem; names the monitor in output, logs and state.
    name: str = field(default="", metadata={"derived": True})
    #: The file it was loaded from.
    path: Path | None = field(default=None, metadata={"derived": True})

    ids: list[int] = field(default_factory=list)
    root: str | None = None
    unzip: bool = True
    sub_dirs: bool = False
    #: Minutes without export mails after which ``run`` stops; 0 = never.
    exit_when_idle: float = 0
    poll_interval: float | None = _duration(60.0, "seconds between polls without IDLE")
    #: A failed export is retried after this long (or with ``--retry-failed``).
    retry_after: float | None = _duration(3600.0, "wait before retrying a failed export")
    #: ``run`` removes downloads older than this; unset keeps everything.
    keep_downloads: float | None = _duration(None, "age after which downloads are pruned")

    source: SourceConfig = field(default_factory=SourceConfig)
    recognizers: list[RecognizerConfig] = field(default_factory=list)
    types: list[TypeConfig] = field(default_factory=list)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    zip: ZipConfig = field(default_factory=ZipConfig)
    #: ``None`` when the file has no ``[csv]`` table: files are delivered unchanged.
    csv: CsvConfig | None = None
    #: The old single ``[deliver]`` table; ``destinations`` is what is used.
    deliver: DeliverConfig = field(default_factory=DeliverConfig)
    #: The ``[[deliver]]`` entries; ``None`` when the file has the old ``[deliver]`` table.
    deliver_list: list[DestinationConfig] | None = field(default=None, metadata={"derived": True})
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    exports: dict[int, ExportExpectation] = field(default_factory=dict)

    @property
    def destinations(self) -> list[DestinationConfig]:
        """Every destination: the ``[[deliver]]`` entries, or those of the ``[deliver]``
        table (derived afresh, so a change to that table is seen)."""
        if self.deliver_list is not None:
            return self.deliver_list
        return self.deliver.destinations()

    @destinations.setter
    def destinations(self, entries: list[DestinationConfig]) -> None:
        self.deliver_list = list(entries)

    def secret_sources(self) -> list[SecretSource]:
        """Every password, token and passphrase the monitor names (configured or not)."""
        found = [self.source.password_source()]
        for destination in self.destinations:
            found += [
                destination.password_source(),
                destination.token_source(),
                destination.passphrase_source(),
            ]
        found += [self.alerts.smtp_password_source()]
        return found

    @property
    def dirs(self) -> MonitorDirs:
        """The monitor's state directory (``root``) and its parts."""
        if self.root is None:
            raise ValueError("root is resolved at load time")
        return MonitorDirs(Path(self.root))
