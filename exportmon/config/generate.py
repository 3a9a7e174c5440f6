"""Writing a new, ready-to-edit monitor config (``exportmon generate``).

The file names one export id and one mailbox, carries the provider's IMAP
settings, and shows every other option as a commented example, so that editing
it is all the documentation most users need.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from exportmon.atomic import atomic_write
from exportmon.config.providers import Provider, guess_provider
from exportmon.config.schema import ITRP_SEARCH
from exportmon.errors import ConfigError
from exportmon.paths import monitors_dir, state_dir


def toml_string(value: str) -> str:
    """``value`` as a TOML string: literal (``'...'``) when it can be, else basic.

    JSON string escapes are valid TOML basic-string escapes.
    """
    if "'" not in value and value.isprintable():
        return f"'{value}'"
    return json.dumps(value)


@dataclass
class NewMonitor:
    """What ``exportmon generate`` was told."""

    export_id: int
    address: str
    #: At most one of the three password sources.
    password: str | None = None
    password_command: str | None = None
    password_env: str | None = None
    name: str | None = None
    to: str | None = None
    ftp_url: str | None = None

    @property
    def monitor_name(self) -> str:
        return self.name or str(self.export_id)


def config_path(new: NewMonitor, directory: Path | None = None) -> Path:
    """Where :func:`write` puts the config for ``new``."""
    return (directory or monitors_dir()) / f"{new.monitor_name}.toml"


def render(new: NewMonitor, provider: Provider | None = None) -> str:
    """The TOML text of the config for ``new``."""
    provider = provider or guess_provider(new.address)
    name = new.monitor_name
    q = toml_string
    to = new.to or str(state_dir() / name / "delivered")
    if new.password_command is not None:
        secret = f"password_command = {q(new.password_command)}"
    elif new.password_env is not None:
        secret = f"password_env = {q(new.password_env)}"
    else:
        secret = f"password = {q(new.password or '')}"
    provider_note = "\n".join(f"# {line}" for line in provider.note.splitlines())
    ftp_entry = "[[deliver]]" if new.ftp_url else "# [[deliver]]"
    ftp_url = (
        f"url = {q(new.ftp_url)}"
        if new.ftp_url
        else '# url = "ftps://ftp.example.com:21/in/exports"'
    )
    return f"""\
# exportmon monitor {q(name)}: export {new.export_id} mailed to {new.address}
# Written by `exportmon generate`. Every option is listed; commented ones show
# their default or an example. Check it with: exportmon fetch --dry-run -c <this file>

ids = [{new.export_id}]                 # Scheduled Export ids to process; other ids are left alone
# root = {q(str(state_dir() / name))}   # state: downloads/, log/, pids/, tmp/, ledger.sqlite
unzip = true                # unpack .zip exports into their CSV files
sub_dirs = false            # put each CSV in a folder named after its export type
exit_when_idle = 0          # `run` stops after this many minutes without export mails; 0 = never
# poll_interval = "60s"     # between polls when the server has no IMAP IDLE
# retry_after = "1h"        # a failed export is retried after this long
# keep_downloads = "90d"    # `run` deletes downloads older than this

[source]
# {provider.name}
{provider_note}
kind = "imap"               # imap, pop3, maildir, mbox or dir
host = {q(provider.host)}
port = {provider.port}
security = {q(provider.security)}          # ssl, starttls or plain
user = {q(new.address)}
{secret}
# password_env = "EXPORTMON_IMAP_PASSWORD"  # instead of password: read it from the environment
# password_command = "pass show mail/exports"  # or: the first line this command prints
# auth = "xoauth2"          # or "oauthbearer": log in with an OAuth2 token...
# token_command = "oauth2-token-helper"     # ...that this command prints
mailbox = "INBOX"
archive = {q(provider.archive)}   # processed mails are moved here; "" leaves them
search = {q(ITRP_SEARCH)}
# ca_file = "/etc/ssl/private-ca.pem"       # trust a private certificate authority
# timeout = "60s"
# allowed_senders = ["noreply@itrp.com", "@example.com"]
# accept_forwarded = false  # also read export mails forwarded as attachments
#                           # (then widen search, e.g. 'ALL': forwards lack the headers)
# delete_after = false      # POP3: delete the mail once its export is delivered
# path = "/var/mail/exports" # maildir, mbox or dir: where the mails are

# Other systems that mail export links (the ITRP one is built in):
# [[recognizers]]
# name = "acme"
# id_header = "X-Acme-Export-Id"
# token_header = "X-Acme-Export-Token"
# subject_pattern = "Export (?P<id>\\\\d+) is ready"
# link_pattern = "https://files\\\\.acme\\\\.example/\\\\S+"

[download]
# ca_file = "/etc/ssl/private-ca.pem"
# timeout = "60s"
# retries = 3
# max_bytes = "10GB"
# allow_hosts = ["itrp.mycompany.local"]   # on-premise hosts with private addresses
# max_redirects = 5

[zip]
# max_entry_bytes = "20GB"  # refuse zip bombs: largest uncompressed file...
# max_total_bytes = "50GB"  # ...largest archive...
# max_ratio = 250           # ...and highest compression ratio
# max_entries = 10000

# Rewrite the CSV files into another dialect (needs unzip = true):
# [csv]
# row_sep = "\\r\\n"         # leave out to keep each row's own line ending
# col_sep = ","
# quote_char = "\\""
# quoting = "minimal"       # minimal, all, nonnumeric, none, or "gem": itrp-export-monitor's output
# encoding = "utf-8-sig"    # input; a UTF-8 byte order mark is dropped
# output_encoding = "utf-8"
# replace_newlines = " "    # replaces line breaks inside values
# value_hook = "myhooks:clean_value"   # a Python function called on every value

# Destinations: any number of [[deliver]] entries, each a url with its own options
# (see docs/destinations.md). An export is delivered when every destination has it.
[[deliver]]
url = {q(to)}   # a folder, file:///..., ftp://, ftps://, sftp:// or https://
# overwrite = "replace"     # replace, keep, or timestamp (keep earlier deliveries)
# order = ["organizations", "sites"]  # export types delivered first, in this order
# temp_suffix = ".in_progress"  # written as <name>.in_progress, renamed once complete
# temp_prefix = "."         # or as .<name>; temp_dir = "tmp": in a folder moved out of
# trigger = "file"          # a trigger file after each file, or "export": one per export
# trigger_name = "{{name}}.done"  # placeholders {{name}}, {{export}}, {{type}}
# trigger_content = false   # the trigger holds the row count and SHA-256
# manifest = "json"         # a manifest per export (json or csv), written last
# manifest_name = "{{export}}.manifest.{{format}}"

{ftp_entry}
{ftp_url}   # ftp:// or ftps:// (explicit TLS)
# user = "user"
# password_env = "EXPORTMON_FTP_PASSWORD"
# ca_file = "/etc/ssl/private-ca.pem"
# passive = true
# timeout = "60s"
# retries = 3

# [[deliver]]               # a time-stamped copy of every delivered file
# url = "/srv/exports/archive"
# archive = true

[alerts]
# smtp_url = "submission://smtp.example.com:587"  # smtp://, smtps:// or submission:// (STARTTLS)
# smtp_user = "alerts@example.com"
# smtp_password_env = "EXPORTMON_SMTP_PASSWORD"
# from = "exportmon@example.com"
# to = ["ops@example.com"]
# command = "/usr/local/bin/page-oncall"  # gets the alert as JSON on stdin
# repeat_after = "24h"
# recovery = true

# What a healthy export looks like, for missing-export and row-count alerts:
# [exports.{new.export_id}]
# expect_every = "1d"       # or a cron expression such as "0 6 * * 1"
# grace = "2h"
# min_rows = {{ people = 100 }}
# max_rows = {{ people = 100000 }}
"""


def write(new: NewMonitor, *, directory: Path | None = None, force: bool = False) -> Path:
    """Write the config for ``new`` with mode 0600 and return its path.

    Refuses to replace an existing file unless ``force``.
    """
    path = config_path(new, directory)
    if path.exists() and not force:
        raise ConfigError(
            "a monitor config already exists here",
            path=path,
            hint="pass --force to replace it, or --name to write another",
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = render(new)
    old_umask = os.umask(0o077)
    try:
        with atomic_write(path, suffix=".tmp") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text.encode("utf-8"))
    finally:
        os.umask(old_umask)
    return path
