"""The monitor config: one TOML file per monitor, described by these dataclasses.

Each field says everything about itself in its ``metadata`` (written with
:func:`option` or the shorthands :func:`_duration`, :func:`_size`,
:func:`_secret`, :func:`_path`), and everything else is derived from it:
validation (:mod:`exportmon.config.load`), path resolution, secret discovery
(:meth:`MonitorConfig.secret_sources`, the permission check, what alert commands
never see), the generated config (:mod:`exportmon.config.generate`) and the
reference page ``docs/config.md`` (:mod:`exportmon.config.reference`).

The metadata keys:

``doc``
    what the option does, one or more sentences (required for every option);
``example``
    a value shown in the generated config and the reference when the default
    says little (``None``, an empty list);
``kind``
    the unit: ``"duration"`` (``"30s"``, ``"2h"``; seconds), ``"size"``
    (``"2GB"``; bytes) or ``"char"`` (exactly one character);
``path``
    ``True``: a file or folder, ``~`` and ``$VAR`` expanded, relative to the
    config file's folder; ``"url"``: the same for a value without ``scheme://``;
``exists``
    ``True``: the file must exist when the config is loaded;
``secret``
    ``True``: the value is a secret; the fields ``<name>_env`` and
    ``<name>_command`` of the same table, when present, are its other two forms
    (at most one of the three may be set; see
    :class:`~exportmon.hooks.credentials.SecretSource`);
``secret_of``
    on ``<name>_env`` / ``<name>_command``: the secret they stand for;
``code``
    ``True``: the value names code that exportmon runs (``csv.value_hook``);
``by_kind``
    ``True``: the default depends on the table's ``kind`` (see
    :data:`SOURCE_KIND_DEFAULTS`);
``applies_to``
    the kinds the option means something for: destination URL kinds
    (``("sftp",)``; setting it for another kind is refused at load) or source
    kinds (stated in the reference);
``toml``
    the key in the file when it differs from the field name (``from``);
``derived``
    ``True``: not read from the file, filled in at load.

Field types drive the structural checks: ``str``, ``int``, ``float``, ``bool``,
``Literal[...]``, ``list[...]``, ``dict[str, ...]``, optional values and nested
tables. Every option of the itrp-export-monitor gem has a home here (see
``docs/gem.md``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

from exportmon.hooks.credentials import SecretSource
from exportmon.paths import MonitorDirs

#: The gem's search: mails from ITRP that carry an export id header.
ITRP_SEARCH = 'FROM ITRP HEADER X-ITRP-ExportID ""'
#: Where Gmail keeps every mail: the archive folder of a Gmail IMAP source.
GMAIL_ARCHIVE = "[Gmail]/All Mail"
GMAIL_HOSTS = ("imap.gmail.com", "imap.googlemail.com")

SourceKind = Literal["imap", "pop3", "maildir", "mbox", "dir", "graph", "folder"]
Security = Literal["ssl", "starttls", "plain"]
Quoting = Literal["minimal", "all", "nonnumeric", "none", "gem"]
Overwrite = Literal["replace", "keep", "timestamp"]
NoticeOn = Literal["failure", "recovery", "missing", "success", "summary"]
HeartbeatKind = Literal["healthchecks", "uptime-kuma", "cronitor"]
TempNaming = Literal["suffix", "prefix", "dir"]
#: Destination URL kinds, for ``applies_to``.
FTP_KINDS = ("ftp", "ftps")
SFTP_KINDS = ("sftp",)
HTTP_KINDS = ("https", "http")
Trigger = Literal["file", "export"]
Manifest = Literal["json", "csv"]


def option(
    default: Any = MISSING,
    *,
    doc: str,
    example: Any = None,
    kind: str | None = None,
    path: bool | str = False,
    exists: bool = False,
    secret: bool = False,
    secret_of: str | None = None,
    code: bool = False,
    by_kind: bool = False,
    applies_to: tuple[str, ...] | None = None,
    toml: str | None = None,
    derived: bool = False,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A config field and everything known about it (see the module docstring).

    A list or dict ``default`` is copied for every instance.
    """
    metadata: dict[str, Any] = {"doc": doc}
    for key, value in (
        ("example", example),
        ("kind", kind),
        ("path", path),
        ("exists", exists),
        ("secret", secret),
        ("secret_of", secret_of),
        ("code", code),
        ("by_kind", by_kind),
        ("applies_to", applies_to),
        ("toml", toml),
        ("derived", derived),
    ):
        if value not in (None, False):
            metadata[key] = value
    if default_factory is None and isinstance(default, (list, dict)):
        default_factory = lambda value=default: copy.deepcopy(value)  # noqa: E731
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _duration(default: float | None, doc: str, **more: Any) -> float | None:
    """A duration in seconds, written ``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``."""
    return option(default, doc=doc, kind="duration", **more)  # type: ignore[no-any-return]


def _size(default: int | None, doc: str, **more: Any) -> int | None:
    """A size in bytes, written ``"500MB"``, ``"2GiB"``."""
    return option(default, doc=doc, kind="size", **more)  # type: ignore[no-any-return]


def _secret(doc: str, **more: Any) -> str | None:
    """A secret; its ``_env`` and ``_command`` siblings are declared with :func:`_env`
    and :func:`_command`."""
    return option(None, doc=doc, secret=True, **more)  # type: ignore[no-any-return]


def _env(of: str, **more: Any) -> str | None:
    """``<of>_env``: the name of an environment variable holding the secret ``of``."""
    return option(  # type: ignore[no-any-return]
        None,
        **more,
        doc=f"name of an environment variable holding {of} (instead of {of})",
        secret_of=of,
        example=f"EXPORTMON_{of.upper()}",
    )


def _command(of: str, **more: Any) -> str | None:
    """``<of>_command``: a shell command whose first output line is the secret ``of``."""
    return option(  # type: ignore[no-any-return]
        None,
        **more,
        doc=f"shell command whose first output line is {of} (instead of {of})",
        secret_of=of,
        example=f"pass show exportmon/{of}",
    )


def _path(doc: str, default: str | None = None, **more: Any) -> str | None:
    """A file or folder option: ``~`` and ``$VAR`` expanded, relative to the config file."""
    return option(default, doc=doc, path=True, **more)  # type: ignore[no-any-return]


def _overwrite() -> Any:
    """``overwrite``, the same in ``[deliver]`` and ``[[deliver]]``."""
    return option(
        "replace",
        doc="a file of that name already there: replace it, keep it (skip), or "
        "timestamp (keep earlier deliveries, add a time stamp to the name)",
    )


def _order() -> Any:
    """``order``, the same in ``[deliver]`` and ``[[deliver]]``."""
    return option(
        [],
        doc="export types delivered first, in this order; the rest follow alphabetically",
        example=["organizations", "sites"],
    )


def _ca_file(what: str) -> str | None:
    return _path(
        f"PEM file of certificate authorities trusted for {what}, besides the system's",
        exists=True,
        example="/etc/ssl/private-ca.pem",
    )


@dataclass(frozen=True)
class KindDefault:
    """A default that is computed from the rest of the table (e.g. from the host)."""

    #: How the reference states it.
    describe: str
    compute: Callable[[Any], Any]


#: The defaults that depend on a source's ``kind``: ``{kind: {field: value}}`` (a
#: value may be a :class:`KindDefault`). A field listed here has the dataclass
#: default ``None`` (unset) and the metadata ``by_kind``; a new kind adds its line.
SOURCE_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "imap": {
        "archive": KindDefault(
            f'"{GMAIL_ARCHIVE}" for Gmail ({", ".join(GMAIL_HOSTS)}), else "Archive"',
            lambda source: (
                GMAIL_ARCHIVE
                if (source.host or "").strip().lower().rstrip(".") in GMAIL_HOSTS
                else "Archive"
            ),
        )
    },
    "pop3": {"archive": ""},
    "graph": {"archive": "Archive"},
    "maildir": {"archive": ""},
    "mbox": {"archive": ""},
    "dir": {"archive": ""},
    # Dropped files: no default archive folder, one must be named (or "" to leave them).
    "folder": {},
}


def apply_kind_defaults(table: Any, defaults: dict[str, dict[str, Any]]) -> None:
    """Fill the unset (``None``) fields of ``table`` with its kind's defaults."""
    for name, value in defaults.get(getattr(table, "kind", ""), {}).items():
        if getattr(table, name) is None:
            setattr(table, name, value.compute(table) if isinstance(value, KindDefault) else value)


def toml_name(f: dataclasses.Field[Any]) -> str:
    """The key of field ``f`` in the TOML file."""
    return str(f.metadata.get("toml", f.name))


def options_of(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` a config file can set (the derived ones left out)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def secret_fields(cls: type) -> list[tuple[str, str | None, str | None]]:
    """``(secret, secret_env or None, secret_command or None)`` for each secret of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return [
        (
            f.name,
            f.name + "_env" if f.name + "_env" in names else None,
            f.name + "_command" if f.name + "_command" in names else None,
        )
        for f in dataclasses.fields(cls)
        if f.metadata.get("secret")
    ]


def secret_source(table: Any, name: str, prefix: str) -> SecretSource:
    """The :class:`SecretSource` of the secret field ``name`` of ``table``, its key
    ``prefix + name`` (a list value, Apprise URLs, is one per line)."""
    value = getattr(table, name)
    if isinstance(value, list):
        value = "\n".join(value) if value else None
    names = {f.name for f in dataclasses.fields(table)}
    env = getattr(table, name + "_env") if name + "_env" in names else None
    command = getattr(table, name + "_command") if name + "_command" in names else None
    return SecretSource(prefix + name, value, env, command)


def table_secrets(table: Any, prefix: str) -> list[SecretSource]:
    """Every secret of ``table`` (configured or not), keys starting with ``prefix``."""
    return [secret_source(table, name, prefix) for name, _, _ in secret_fields(type(table))]


@dataclass
class SourceConfig:
    """``[source]``: where export mails are read from."""

    kind: SourceKind = option(
        "imap",
        doc="where the mails are: an IMAP or POP3 server, Microsoft Graph, or a local "
        "Maildir, mbox file or folder of .eml files (dir)",
    )
    host: str = option("", doc="the mail server's address (imap, pop3)", example="imap.example.com")
    port: int = option(
        0, doc="the server's port; 0: 993 (IMAP) or 995 (POP3) with ssl, else 143 or 110"
    )
    security: Security = option(
        "ssl",
        doc="ssl: TLS from the start; starttls: upgrade a plain connection; plain: "
        "unencrypted (the password travels in clear text; warned about when connecting)",
    )
    user: str = option("", doc="the login name, usually the mailbox's address")
    password: str | None = _secret(
        "the IMAP/POP3 password (prefer password_env or password_command)"
    )
    password_env: str | None = _env("password")
    password_command: str | None = _command("password")
    auth: Literal["password", "xoauth2", "oauthbearer", "oauth2"] = option(
        "password",
        doc="password: log in with a password; oauth2: exportmon's own OAuth2 sign-in "
        "(exportmon login and the oauth_* options); xoauth2, oauthbearer: with a token "
        "printed by token_command",
    )
    token_command: str | None = option(
        None,
        doc="auth = xoauth2 or oauthbearer: shell command printing an access token; run "
        "for every login",
        example="oauth2-token-helper",
    )
    oauth_provider: Literal["microsoft", "google", "custom"] | None = option(
        None,
        doc="auth = oauth2: microsoft, google, or custom (the oauth_*_url endpoints); "
        "unset: guessed from the host (Microsoft for kind = graph)",
    )
    oauth_flow: Literal["device", "browser", "client-credentials"] | None = option(
        None,
        doc="how exportmon login signs in: device (a code to enter), browser (a "
        "loopback redirect), client-credentials (app-only, no sign-in); unset: "
        "browser for Google, else device",
    )
    oauth_client_id: str = option(
        "", doc="the client (application) id of the app registered with the provider"
    )
    oauth_tenant: str = option("common", doc="Microsoft only: the tenant (directory) id or domain")
    oauth_client_secret: str | None = _secret(
        "the app's client secret (client-credentials, Google's installed apps)"
    )
    oauth_client_secret_env: str | None = _env("oauth_client_secret")
    oauth_client_secret_command: str | None = _command("oauth_client_secret")
    oauth_scopes: list[str] = option(
        [], doc="the OAuth2 scopes asked for; empty: the provider's mail scopes"
    )
    oauth_token_url: str | None = option(None, doc="oauth_provider = custom: the token endpoint")
    oauth_device_url: str | None = option(
        None, doc="oauth_provider = custom: the device authorization endpoint"
    )
    oauth_authorize_url: str | None = option(
        None, doc="oauth_provider = custom: the authorization endpoint"
    )
    graph_url: str = option(
        "https://graph.microsoft.com/v1.0",
        doc="kind = graph: the Microsoft Graph API's base address",
    )
    mailbox: str = option("INBOX", doc="the folder export mails arrive in")
    archive: str | None = option(
        None,
        doc='the folder processed mails are moved to; "" leaves them where they are',
        by_kind=True,
    )
    search: str = option(
        ITRP_SEARCH, doc="IMAP search criteria finding the export mails (one line)"
    )
    ca_file: str | None = _ca_file("the mail server")
    path: str | None = _path(
        "kind = maildir, mbox or dir: the Maildir, mbox file or folder of .eml files; "
        "kind = folder: the folder export files are dropped into",
        example="/var/mail/exports",
    )
    timeout: float | None = _duration(60.0, "network timeout of the mail server")
    delete_after: bool = option(
        False, doc="POP3 only: delete a mail from the server once its export is delivered"
    )
    allowed_senders: list[str] = option(
        [],
        doc="only mails from these addresses (or @domains) are processed; empty allows all",
        example=["noreply@itrp.com", "@example.com"],
    )
    accept_forwarded: bool = option(
        False,
        doc="also look for export mails forwarded as attachments (message/rfc822; widen "
        "search then, forwards lack the headers)",
    )

    # kind = "folder": export files dropped into the folder ``path`` (docs/folder.md).
    patterns: list[str] = option(
        ["*.csv", "*.zip"],
        doc="kind = folder: the file names taken as exports (shell patterns, any case)",
    )
    settle: float | None = _duration(
        30.0, "kind = folder: a file is taken once its size and mtime are unchanged this long"
    )
    trigger: str | None = option(
        None,
        doc="kind = folder: a file is taken only once this file exists (then removed)",
        example="{name}.done",
    )
    export_id: int | None = option(
        None, doc="kind = folder: the export id dropped files count as (default: the only id)"
    )
    header_sep: str | None = option(
        None, doc="kind = folder: the header row's column separator; unset: sniffed"
    )

    def __post_init__(self) -> None:
        apply_kind_defaults(self, SOURCE_KIND_DEFAULTS)

    def password_source(self) -> SecretSource:
        return secret_source(self, "password", "source.")

    def oauth_client_secret_source(self) -> SecretSource:
        return secret_source(self, "oauth_client_secret", "source.")

    def default_port(self) -> int:
        if self.port:
            return self.port
        if self.kind == "pop3":
            return 995 if self.security == "ssl" else 110
        return 993 if self.security == "ssl" else 143


@dataclass
class RecognizerConfig:
    """``[[recognizers]]``: how to spot export mails of a system other than ITRP."""

    name: str = option("", doc="the recognizer's name, shown in logs (required)", example="acme")
    id_header: str | None = option(
        None, doc="header holding the export id (a number)", example="X-Acme-Export-Id"
    )
    token_header: str | None = option(
        None, doc="header holding a token unique to each export file", example="X-Acme-Token"
    )
    subject_pattern: str | None = option(
        None,
        doc="regular expression the subject must match; a group (?P<id>...) may give the id",
        example=r"Export (?P<id>\d+) is ready",
    )
    link_pattern: str | None = option(
        None,
        doc="regular expression for the download link in the body (default: the first "
        "http(s) link)",
        example=r"https://files\.acme\.example/\S+",
    )
    export_id: int | None = option(None, doc="the export id of mails that carry none")
    attachments: bool = option(True, doc="take attached .csv and .zip files as the export")


@dataclass
class TypeConfig:
    """``[[types]]``: how a dropped file's export type is told (``kind = "folder"``)."""

    name: str = option("", doc="the export type's name (order, sub_dirs, {type} in URLs)")
    header_has: list[str] = option(
        [], doc="column names the file's header row must all have", example=["USER_ID"]
    )
    name_pattern: str | None = option(
        None, doc="a regular expression searched for in the file name", example="^users"
    )


@dataclass
class DownloadConfig:
    """``[download]``: how export links are downloaded."""

    ca_file: str | None = _ca_file("download servers")
    timeout: float | None = _duration(60.0, "connect and read timeout")
    retries: int = option(3, doc="attempts after the first, with back-off")
    max_bytes: int | None = _size(10 * 1000**3, "largest download accepted")
    allow_hosts: list[str] = option(
        [],
        doc="hosts allowed although they resolve to private or loopback addresses "
        "(on-premise systems)",
        example=["itrp.mycompany.local"],
    )
    max_redirects: int = option(5, doc="redirects followed per download")
    deadline: float | None = _duration(
        3600.0, "longest a download may take, all attempts and waits together; then it fails"
    )
    min_rate: int | None = _size(
        10_000,
        "slowest transfer accepted, bytes per second over each timeout-long window; a "
        "slower one is cut and retried",
    )


@dataclass
class ZipConfig:
    """``[zip]``: limits that make hostile archives (zip bombs) fail safely."""

    max_entry_bytes: int | None = _size(20 * 1000**3, "largest uncompressed entry")
    max_total_bytes: int | None = _size(50 * 1000**3, "largest uncompressed archive")
    max_ratio: float = option(
        250.0, doc="highest compression ratio, of each entry and of the whole archive"
    )
    max_entries: int = option(10_000, doc="most entries in one archive")


@dataclass
class CsvConfig:
    """``[csv]``: rewrite the CSV files into another dialect (its presence turns
    rewriting on; needs ``unzip = true``)."""

    row_sep: str | None = option(
        None,
        doc="line ending written; unset keeps each row's own (the gem's :auto)",
        example="\r\n",
    )
    col_sep: str = option(",", doc="column separator written")
    quote_char: str = option('"', doc="quote character written", kind="char")
    quoting: Quoting = option(
        "minimal",
        doc="which values are quoted; gem reproduces itrp-export-monitor's output "
        "(empty values as two quote characters, values quoted only when they hold a "
        "separator, quote or newline)",
    )
    encoding: str = option(
        "utf-8-sig", doc="text encoding of the input; a UTF-8 byte order mark is dropped"
    )
    output_encoding: str = option("utf-8", doc="text encoding written")
    replace_newlines: str | None = option(
        None, doc="text that replaces line breaks (\\r\\n, \\n) inside values", example=" "
    )
    value_hook: str | None = option(
        None,
        doc="module:function called on every value (the gem's csv_value_proc). This "
        "runs code: the module is imported with exportmon's rights, from the config "
        "file's folder or the Python path. It must not be in the standard library "
        "(os:system is refused), and a module or package folder that group or others "
        "can write is a loud warning (refused with --strict)",
        example="myhooks:clean_value",
        code=True,
    )
    columns: list[str] | None = option(
        None,
        doc="header names of the columns written, in this order (others are dropped)",
        example=["id", "name", "email"],
    )
    rename: dict[str, str] | None = option(
        None, doc="header names replaced in the output", example={"ITRP ID": "id"}
    )
    missing: Literal["error", "empty"] = option(
        "error",
        doc="a column of columns missing from a file's header: error fails that file, "
        "empty writes the column empty",
    )
    strip_formula_guard: bool = option(
        False,
        doc="drop the tab or ' exporting systems put before values starting with = + - @ "
        "(a spreadsheet formula guard)",
    )


@dataclass
class DeliverConfig:
    """``[deliver]``: the older single table of destinations (a folder and an FTP
    server); ``[[deliver]]`` entries replace it."""

    to: str | None = _path("local destination folder", example="/srv/exports/in")
    ftp_url: str | None = option(
        None,
        doc="the FTP server: ftp://host[:port] or ftps://host[:port] (explicit TLS)",
        example="ftps://ftp.example.com:21",
    )
    ftp_dir: str = option(".", doc="the folder on the FTP server, below the login folder")
    ftp_user: str | None = option(None, doc="the FTP login name")
    ftp_password: str | None = _secret(
        "the FTP password (prefer ftp_password_env or ftp_password_command)"
    )
    ftp_password_command: str | None = _command("ftp_password")
    ftp_password_env: str | None = _env("ftp_password")
    ftp_ca_file: str | None = _ca_file("the FTPS server")
    ftp_passive: bool = option(True, doc="FTP passive mode")
    ftp_timeout: float | None = _duration(60.0, "FTP timeout")
    ftp_retries: int = option(3, doc="FTP attempts after the first")
    overwrite: Overwrite = _overwrite()
    order: list[str] = _order()
    archive_dir: str | None = _path(
        "a folder that keeps a time-stamped copy of every delivered file",
        example="/srv/exports/archive",
    )

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
        return secret_source(self, "ftp_password", "deliver.")


@dataclass
class DestinationConfig:
    """``[[deliver]]``: one destination, named by its ``url``.

    ``url`` is a local folder (``/srv/in``, ``file:///srv/in``), ``ftp://``,
    ``ftps://``, ``sftp://`` or ``https://``; the rest are that destination's own
    options (each kind reads the ones that apply to it). The old ``[deliver]``
    table is turned into a list of these at load (:func:`DeliverConfig.destinations`).
    """

    url: str = option(
        "",
        doc="where files go: a folder (/srv/in, file:///srv/in), "
        "ftp://host[:port]/folder, ftps://... (explicit TLS; the folder is below the "
        "login folder, //folder is absolute), sftp://[user@]host[:port]/folder or "
        "https://host/path. Never a password: use password_env or password_command",
        example="/srv/exports/in",
        path="url",
    )
    user: str | None = option(
        None, doc="login name (FTP, SFTP, HTTPS basic); may also be the URL's user@"
    )
    password: str | None = _secret("the password (prefer password_env or password_command)")
    password_env: str | None = _env("password")
    password_command: str | None = _command("password")
    token: str | None = _secret(
        "HTTPS: a bearer token instead of user and password (prefer token_env or token_command)",
        applies_to=HTTP_KINDS,
    )
    token_env: str | None = _env("token", applies_to=HTTP_KINDS)
    token_command: str | None = _command("token", applies_to=HTTP_KINDS)
    ssh_key: str | None = _path(
        "SFTP: the private key file (OpenSSH or PEM)", applies_to=SFTP_KINDS
    )
    ssh_key_passphrase: str | None = _secret(
        "SFTP: the passphrase of ssh_key, if it has one", applies_to=SFTP_KINDS
    )
    ssh_key_passphrase_env: str | None = _env("ssh_key_passphrase", applies_to=SFTP_KINDS)
    ssh_key_passphrase_command: str | None = _command("ssh_key_passphrase", applies_to=SFTP_KINDS)
    known_hosts: str | None = _path(
        "SFTP: the host keys trusted (OpenSSH known_hosts), unless host_key pins one",
        "~/.ssh/known_hosts",
        applies_to=SFTP_KINDS,
    )
    host_key: str | None = option(
        None,
        doc="SFTP: the one host key accepted, as SHA256:... (ssh-keygen -l)",
        example="SHA256:...",
        applies_to=SFTP_KINDS,
    )
    method: Literal["POST", "PUT"] = option(
        "POST", doc="HTTPS: the request method", applies_to=HTTP_KINDS
    )
    body: Literal["raw", "multipart"] = option(
        "raw",
        doc="HTTPS: the body is the file (raw) or a form holding it (multipart)",
        applies_to=HTTP_KINDS,
    )
    multipart_field: str = option(
        "file", doc="HTTPS, body = multipart: the form field", applies_to=HTTP_KINDS
    )
    headers: dict[str, str] = option(
        {},
        doc="HTTPS: extra request headers",
        example={"X-Source": "exportmon"},
        applies_to=HTTP_KINDS,
    )
    reference: str | None = option(
        None,
        doc="HTTPS: the receiving system's processing reference in the answer: a regular "
        "expression with a group (?P<ref>...), or a JSON pointer (/id)",
        applies_to=HTTP_KINDS,
    )
    status_url: str | None = option(
        None,
        doc="HTTPS: polled until status_done holds; may contain {reference}",
        applies_to=HTTP_KINDS,
    )
    status_done: str | None = option(
        None, doc="HTTPS: what status_url says when done", applies_to=HTTP_KINDS
    )
    status_fail: str | None = option(
        None, doc="HTTPS: what status_url says on failure", applies_to=HTTP_KINDS
    )
    status_warn: str | None = option(
        None, doc="HTTPS: what status_url says for a warning", applies_to=HTTP_KINDS
    )
    status_interval: float | None = _duration(
        30.0, "HTTPS: time between status polls", applies_to=HTTP_KINDS
    )
    status_timeout: float | None = _duration(
        24 * 3600.0, "HTTPS: give up polling status_url after this long", applies_to=HTTP_KINDS
    )
    overwrite: Overwrite = _overwrite()
    order: list[str] = _order()
    temp_suffix: str = option(
        ".in_progress",
        doc="a file is written as <name><temp_suffix> first, then renamed",
    )
    temp_prefix: str = option("", doc="or as <temp_prefix><name> first")
    temp_dir: str | None = option(
        None,
        doc="or in this folder (on the same server; relative: below the destination "
        "folder) and moved out; never inside the monitor's state folder",
    )
    trigger: Trigger | None = option(
        None, doc="trigger files written after the data: one per file or one per export"
    )
    trigger_name: str = option("{name}.done", doc="the trigger file's name")
    trigger_content: bool = option(
        False, doc="the trigger holds the row count and SHA-256 of what it announces"
    )
    manifest: Manifest | None = option(
        None,
        doc="a manifest per export (files, sizes, rows, SHA-256), written last, atomically",
    )
    manifest_name: str = option("{export}.manifest.{format}", doc="the manifest's name")
    retries: int = option(3, doc="attempts after the first, for the whole batch")
    timeout: float | None = _duration(60.0, "network timeout")
    ca_file: str | None = _ca_file("the server (FTPS, HTTPS)")
    passive: bool = option(True, doc="FTP: passive mode", applies_to=FTP_KINDS)
    archive: bool = option(
        False, doc="a time-stamped copy of every file (the old deliver.archive_dir)"
    )
    #: How messages name this entry's keys: ``deliver[0].`` (``deliver.ftp_`` for the
    #: old table's FTP server), so an error names the key the user wrote.
    key: str = option("deliver.", doc="prefix of this entry's keys in messages", derived=True)

    def password_source(self) -> SecretSource:
        return secret_source(self, "password", self.key)

    def token_source(self) -> SecretSource:
        return secret_source(self, "token", self.key)

    def passphrase_source(self) -> SecretSource:
        return secret_source(self, "ssh_key_passphrase", self.key)

    def secret_sources(self) -> list[SecretSource]:
        """Every secret of this destination (configured or not)."""
        return table_secrets(self, self.key)


@dataclass
class AlertsConfig:
    """``[alerts]``: who hears about failures (the gem's ``on_exception``)."""

    smtp_url: str | None = option(
        None,
        doc="the mail server alerts go through: smtp://host:25, smtps://host:465 or "
        "submission://host:587 (STARTTLS)",
        example="submission://smtp.example.com:587",
    )
    smtp_user: str | None = option(None, doc="the SMTP login name", example="alerts@example.com")
    smtp_auth: Literal["password", "oauth2"] = option(
        "password",
        doc="how alerts log in: password (smtp_user and the SMTP password), or oauth2 "
        '(XOAUTH2 with the mailbox\'s own sign-in, [source] auth = "oauth2"; smtp_user '
        "defaults to the mailbox's user)",
    )
    smtp_password: str | None = _secret(
        "the SMTP password (prefer smtp_password_env or smtp_password_command)"
    )
    smtp_password_command: str | None = _command("smtp_password")
    smtp_password_env: str | None = _env("smtp_password")
    smtp_ca_file: str | None = _ca_file("the SMTP server")
    from_: str | None = option(
        None, doc="the alerts' sender address", toml="from", example="exportmon@example.com"
    )
    to: list[str] = option([], doc="alert recipients", example=["ops@example.com"])
    command: str | None = option(
        None,
        doc="shell command run for every notice, with the notice as JSON on stdin and in "
        "EXPORTMON_* variables (never a secret)",
        example="/usr/local/bin/page-oncall",
    )
    repeat_after: float | None = _duration(
        24 * 3600.0, "an unresolved failure is alerted again after this long"
    )
    recovery: bool = option(True, doc="send a notice when a failing monitor succeeds again")
    notify: list[str] = option(
        [],
        doc="Apprise URLs notices are sent to (Slack, Teams, ntfy, Matrix, json://...); "
        "they hold tokens, so they are a secret",
        secret=True,
        example=["ntfys://ntfy.sh/my-topic"],
    )
    notify_env: str | None = _env("notify")
    notify_command: str | None = _command("notify")
    on: list[NoticeOn] = option(
        ["failure", "recovery", "missing"],
        doc="which notices are sent: failure, recovery, missing, success, summary",
    )

    def smtp_password_source(self) -> SecretSource:
        return secret_source(self, "smtp_password", "alerts.")

    def notify_source(self) -> SecretSource:
        return secret_source(self, "notify", "alerts.")


@dataclass
class HeartbeatConfig:
    """``[heartbeat]``: pings to an outside monitoring service (Healthchecks, Uptime Kuma,
    Cronitor), which raises the alarm when they stop."""

    url: str | None = _secret(
        "the check's ping URL; it holds the check's key (prefer url_env or url_command)"
    )
    url_env: str | None = _env("url")
    url_command: str | None = _command("url")
    kind: HeartbeatKind = option("healthchecks", doc="the service: how it is pinged")
    timeout: float | None = _duration(10.0, "how long one ping may take")

    @property
    def configured(self) -> bool:
        return bool(self.url or self.url_env or self.url_command)

    def url_source(self) -> SecretSource:
        return secret_source(self, "url", "heartbeat.")


@dataclass
class ExportExpectation:
    """``[exports.<id>]``: what a healthy export looks like (missing-export and
    row-count alerts)."""

    expect_every: str | None = option(
        None,
        doc='how often the export comes: a duration ("1d", "1w") or a 5-field cron expression',
        example="0 6 * * 1",
    )
    grace: float | None = _duration(3600.0, "how late an export may be")
    min_rows: dict[str, int] = option(
        {}, doc="fewest rows per export type", example={"people": 100}
    )
    max_rows: dict[str, int] = option(
        {}, doc="most rows per export type", example={"people": 100000}
    )


@dataclass
class MonitorConfig:
    """One monitor: the top level of its TOML file."""

    name: str = option(
        "",
        doc="the file's stem; names the monitor in output, logs and state",
        derived=True,
    )
    path: Path | None = option(None, doc="the file it was loaded from", derived=True)

    ids: list[int] = option(
        [], doc="the export ids processed (required); mails of other ids are left alone"
    )
    root: str | None = _path(
        "the state folder: downloads/, log/, pids/, tmp/ and ledger.sqlite; unset: the "
        "user state folder's <name>/ (~/.local/state/exportmon/<name>)",
        example="/srv/exportmon/777",
    )
    unzip: bool = option(True, doc="unpack .zip exports into their CSV files")
    sub_dirs: bool = option(False, doc="deliver each CSV into a folder named after its export type")
    exit_when_idle: float = option(
        0, doc="minutes without export mails after which run stops; 0 = never"
    )
    poll_interval: float | None = _duration(
        60.0, "time between polls when the server has no IMAP IDLE"
    )
    retry_after: float | None = _duration(
        3600.0, "a failed export is retried after this long (or with --retry-failed)"
    )
    keep_downloads: float | None = _duration(
        None, "run removes downloads older than this; unset keeps everything", example="90d"
    )

    source: SourceConfig = option(
        doc="where export mails are read from", default_factory=SourceConfig
    )
    recognizers: list[RecognizerConfig] = option(
        [], doc="how to spot export mails of systems other than ITRP"
    )
    types: list[TypeConfig] = option(
        [], doc="kind = folder: how a dropped file's export type is told"
    )
    download: DownloadConfig = option(
        doc="how export links are downloaded", default_factory=DownloadConfig
    )
    zip: ZipConfig = option(doc="limits for unpacking archives", default_factory=ZipConfig)
    csv: CsvConfig | None = option(
        None, doc="present: rewrite the CSV files; absent: files are delivered unchanged"
    )
    deliver: DeliverConfig = option(
        doc="the older single table of destinations", default_factory=DeliverConfig
    )
    deliver_list: list[DestinationConfig] | None = option(
        None,
        doc="the [[deliver]] entries; None when the file has the old [deliver] table",
        derived=True,
    )
    alerts: AlertsConfig = option(doc="who hears about failures", default_factory=AlertsConfig)
    heartbeat: HeartbeatConfig = option(
        doc="pings to an outside monitoring service", default_factory=HeartbeatConfig
    )
    exports: dict[int, ExportExpectation] = option(
        {}, doc="what a healthy export looks like, per export id"
    )

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

    def tables(self) -> Iterator[tuple[str, Any]]:
        """``(key prefix, table)`` for every table of the config: ``source.``,
        ``recognizers[0].``, ``exports.777.``, each ``[[deliver]]`` entry (its
        :attr:`~DestinationConfig.key`) or the old ``deliver.`` table, ..."""
        for f in options_of(type(self)):
            value = getattr(self, f.name)
            name = toml_name(f)
            if f.name == "deliver" and self.deliver_list is not None:
                continue
            if dataclasses.is_dataclass(value):
                yield f"{name}.", value
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if dataclasses.is_dataclass(item):
                        yield f"{name}[{i}].", item
            elif isinstance(value, dict):
                for item_key, item in value.items():
                    if dataclasses.is_dataclass(item):
                        yield f"{name}.{item_key}.", item
        for destination in self.deliver_list or []:
            yield destination.key, destination

    def secret_sources(self) -> list[SecretSource]:
        """Every password, token, passphrase and secret URL the monitor names
        (configured or not), found from the fields marked ``secret``."""
        found: list[SecretSource] = []
        for prefix, table in self.tables():
            found += table_secrets(table, prefix)
        return found

    @property
    def dirs(self) -> MonitorDirs:
        """The monitor's state directory (``root``) and its parts."""
        if self.root is None:
            raise ValueError("root is resolved at load time")
        return MonitorDirs(Path(self.root))
