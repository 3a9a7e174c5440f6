"""Helpers for the fetch tests: export mails, monitor configs, and the ledger steps after fetch."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from exportmon.config.load import parse
from exportmon.config.schema import MonitorConfig
from exportmon.ledger import Ledger
from servers import ServerStartError
from servers.dovecot import DovecotServer

ITRP_FROM = "ITRP <noreply@itrp.com>"


def export_mail(
    link: str | None = None,
    *,
    export_id: int | str | None = 777,
    token: str | None = "tok-0001",
    subject: str = "Export finished - Scheduled export",
    sender: str = ITRP_FROM,
    message_id: str | None = None,
    text: str | None = None,
    html: str | None = None,
    attachments: Iterable[tuple[str, bytes]] = (),
    headers: Mapping[str, str] | None = None,
    auto_submitted: str | None = "auto-generated",
) -> bytes:
    """An ITRP-style export mail (its headers, a text part with ``link``) as bytes."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "exports@example.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 11, 23, 8, 40, tzinfo=timezone.utc))
    message["Message-ID"] = message_id or make_msgid(domain="itrp.example")
    if export_id is not None:
        message["X-ITRP-ExportID"] = str(export_id)
    if token is not None:
        message["X-ITRP-Export"] = token
    if auto_submitted:
        message["Auto-Submitted"] = auto_submitted
    for name, value in (headers or {}).items():
        message[name] = value
    body = (
        text
        if text is not None
        else (f"The export is ready for download: {link}\n" if link else "Your export.\n")
    )
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for name, content in attachments:
        maintype, subtype = ("application", "zip") if name.endswith(".zip") else ("text", "csv")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def plain_mail(
    subject: str = "Lunch on Friday?", sender: str = "Colleague <bob@example.com>"
) -> bytes:
    """An ordinary mail that is not an export."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "exports@example.com"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content("See you at noon: https://example.com/menu\n")
    return message.as_bytes()


def imap_table(user: Any, security: str = "ssl", **extra: Any) -> dict[str, Any]:
    """A ``[source]`` table for the ``mail_user`` fixture account."""
    port = user.ports.imaps if security == "ssl" else user.ports.imap
    return {
        "kind": "imap",
        "host": user.host,
        "port": port,
        "security": security,
        "user": user.name,
        "password": user.password,
        "ca_file": str(user.ca_file),
        "archive": "Archive",
        **extra,
    }


def pop3_table(user: Any, security: str = "ssl", **extra: Any) -> dict[str, Any]:
    port = user.ports.pop3s if security == "ssl" else user.ports.pop3
    return {
        "kind": "pop3",
        "host": user.host,
        "port": port,
        "security": security,
        "user": user.name,
        "password": user.password,
        "ca_file": str(user.ca_file),
        **extra,
    }


def config_data(
    root: Path,
    source: Mapping[str, Any],
    *,
    ids: Iterable[int] = (777,),
    ca_file: Path | str | None = None,
    allow_hosts: Iterable[str] = ("127.0.0.1",),
    **top: Any,
) -> dict[str, Any]:
    """A monitor config as TOML data: downloads trust ``ca_file`` and may reach 127.0.0.1."""
    download: dict[str, Any] = {"allow_hosts": list(allow_hosts), "retries": 2}
    if ca_file is not None:
        download["ca_file"] = str(ca_file)
    download.update(top.pop("download", {}))
    data: dict[str, Any] = {"ids": list(ids), "root": str(root), **top}
    data["source"] = dict(source)
    data["download"] = download
    return data


def monitor(data: Mapping[str, Any], path: Path, name: str = "777") -> MonitorConfig:
    """A validated :class:`MonitorConfig` from TOML data (as if loaded from ``path``)."""
    config = parse(dict(data), path=path, name=name)
    config.dirs.create()
    return config


def toml(data: Mapping[str, Any]) -> str:
    """TOML text for ``data`` (strings, numbers, booleans, lists, tables, arrays of tables)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            arrays.extend((key, item) for item in value)
        else:
            lines.append(f"{key} = {_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines.extend(f"{k} = {_value(v)}" for k, v in table.items())
    for key, table in arrays:
        lines.append(f"\n[[{key}]]")
        lines.extend(f"{k} = {_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(directory: Path, data: Mapping[str, Any], name: str = "777") -> Path:
    """Write ``data`` as ``<directory>/<name>.toml`` (mode 0600) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(toml(data))
    path.chmod(0o600)
    return path


def deliver_everything(ledger: Ledger) -> None:
    """Stand in for unzip and delivery: mark every downloaded export delivered, settle mails."""
    for export in ledger.exports("downloaded"):
        ledger.advance_export(export.id, "unpacked")
        ledger.advance_export(export.id, "delivered")
        if export.mail_id is not None:
            ledger.settle_mail(export.mail_id)


@contextlib.contextmanager
def oauth_dovecot_server(tls_ca: Any, token_server: Any) -> Iterator[DovecotServer]:
    """A second Dovecot taking XOAUTH2/OAUTHBEARER, checking tokens at ``token_server``.

    Dovecot asks ``<token_server>/tokeninfo/<token>`` and expects JSON whose
    ``username`` is the login name (see :func:`grant_token`).
    """
    with oauth_dovecot(
        tls_ca,
        f"tokeninfo_url = {token_server.base_url}/tokeninfo/\nusername_attribute = username\n",
    ) as server:
        yield server


@contextlib.contextmanager
def introspecting_dovecot(
    tls_ca: Any, oauth_server: Any, *, submission_relay: Any = None
) -> Iterator[DovecotServer]:
    """A Dovecot taking XOAUTH2/OAUTHBEARER that validates every token at the
    introspection endpoint (RFC 7662) of ``oauth_server`` (tests/servers/oauth.py);
    with ``submission_relay`` it also takes mail by submission and relays it there."""
    settings = (
        "introspection_mode = post\n"
        f"introspection_url = {oauth_server.url('/introspect')}\n"
        "force_introspection = yes\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
        f"tls_ca_cert_file = {tls_ca.ca_file}\n"
    )
    with oauth_dovecot(tls_ca, settings, submission_relay=submission_relay) as server:
        yield server


@contextlib.contextmanager
def oauth_dovecot(
    tls_ca: Any, oauth2_settings: str, *, submission_relay: Any = None
) -> Iterator[DovecotServer]:
    """A Dovecot whose ``oauth2`` passdb (for XOAUTH2 and OAUTHBEARER) is configured
    by ``oauth2_settings``; password logins keep working for the test's own clients."""
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-oauth-"))
    workdir.chmod(0o755)
    settings = workdir / "oauth2.conf.ext"
    settings.write_text(oauth2_settings)
    settings.chmod(0o644)
    server = DovecotServer(
        workdir,
        tls_ca.server,
        tls_ca.ca_file,
        extra_config=(
            "auth_mechanisms = plain login xoauth2 oauthbearer\n"
            f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {settings}\n}}\n"
        ),
        submission_relay=submission_relay,
    )
    try:
        server.start()
    except ServerStartError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"OAuth2 Dovecot could not be started:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def grant_token(token_server: Any, user: Any) -> str:
    """Make ``token_server`` vouch for a new access token of ``user``; return the token."""
    token = f"ya29.token-for-{user.name}"
    body = json.dumps({"username": user.name, "active": True}).encode()
    token_server.add(f"/tokeninfo/{token}", body, content_type="application/json")
    return token


def ftp_monitor(tmp_path, mail_user, ftps_server, tls_ca, **deliver):
    """A monitor delivering to the FTPS fixture only; returns (config, env)."""
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user),
        ca_file=tls_ca.ca_file,
        retry_after="1s",
        deliver={
            "ftp_url": f"ftps://127.0.0.1:{ftps_server.port}",
            "ftp_dir": "in",
            "ftp_user": ftps_server.user,
            "ftp_password_env": "FTP_PASS",
            "ftp_ca_file": str(tls_ca.ca_file),
            "ftp_retries": 0,
            **deliver,
        },
    )
    return write_config(tmp_path / "monitors", data), {"FTP_PASS": ftps_server.password}
