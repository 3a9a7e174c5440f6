"""OAuth2 sign-in: `exportmon login` with each flow against a local authorization server,
then `run` over IMAP and POP3 against a Dovecot that validates every token at that
server's introspection endpoint, with access tokens expiring during the run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, introspecting_dovecot, write_config
from watching import Watcher, wait_for, wait_for_cycles

from cli import run_cli
from exportmon.errors import SignInError
from exportmon.oauth import flows
from exportmon.oauth.providers import Provider
from servers.fixtures import OAUTH_APP as APP
from servers.fixtures import OAUTH_APP_SECRET as APP_SECRET
from servers.fixtures import OAUTH_CLIENT as CLIENT
from servers.oauth import OAuthServer
from servers.smtp import SmtpServer


@pytest.fixture
def oauth_dovecot(tls_ca, oauth_server):
    with introspecting_dovecot(tls_ca, oauth_server) as server:
        yield server


@pytest.fixture
def env(tls_ca):
    """The environment of every exportmon run: the test CA is trusted for the token endpoint."""
    return {"SSL_CERT_FILE": str(tls_ca.ca_file), "APP_SECRET": APP_SECRET}


def oauth_source(user, server, kind="imap", flow="device", **extra):
    table = imap_table(user, **extra)
    del table["password"]
    if kind == "pop3":
        table.update(kind="pop3", port=user.ports.pop3s)
        del table["archive"]
    table.update(
        auth="oauth2",
        oauth_provider="custom",
        oauth_flow=flow,
        oauth_client_id=APP if flow == "client-credentials" else CLIENT,
        oauth_token_url=server.url("/token"),
        oauth_device_url=server.url("/devicecode"),
        oauth_authorize_url=server.url("/authorize"),
        oauth_scopes=["mail"],
    )
    if flow == "client-credentials":
        table["oauth_client_secret_env"] = "APP_SECRET"
    return table


def monitor_file(tmp_path, user, server, top=None, **source):
    data = config_data(
        tmp_path / "state",
        oauth_source(user, server, **source),
        ca_file=user.ca_file,
        **(top or {}),
    )
    data["deliver"] = {"to": str(tmp_path / "out")}
    return write_config(tmp_path / "monitors", data)


def device_login(config: Path, server: OAuthServer, user, env: dict[str, str]) -> str:
    """Run `exportmon login` (device flow), approve its code as ``user``; its stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-c", str(config), "login"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
        text=True,
    )
    try:
        code = wait_for(
            lambda: server.pending_user_codes() or process.poll() is not None, timeout=30
        )
        assert process.poll() is None, process.communicate()[1]
        code = server.pending_user_codes()[0]
        assert server.approve(user.name, code)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert code in err and server.url("/device") in err
    return err


def saved(tmp_path) -> dict:
    path = tmp_path / "state" / "oauth-token.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def test_device_login_then_run_over_imap_with_token_validation(
    tmp_path, oauth_server, oauth_dovecot, https_server, env
):
    user = oauth_dovecot.add_user()
    user.append(export_mail(https_server.add("/e/a.csv", b"id\n1\n"), token="tok-a"))
    config = monitor_file(tmp_path, user, oauth_server)
    err = device_login(config, oauth_server, user, env)
    tokens = saved(tmp_path)
    assert tokens["access_token"] not in err and tokens["refresh_token"] not in err
    result = run_cli("-c", config, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    assert (tmp_path / "out" / "a.csv").read_bytes() == b"id\n1\n"
    assert oauth_server.introspections >= 1
    assert tokens["access_token"] not in result.stderr


def test_browser_login_checks_pkce_and_the_state(tmp_path, oauth_server, oauth_dovecot, env):
    user = oauth_dovecot.add_user()
    oauth_server.browser_user = user.name
    config = monitor_file(tmp_path, user, oauth_server, flow="browser")
    # The "browser": fetches the address, follows the redirect to exportmon's loopback.
    browser = tmp_path / "browser.py"
    browser.write_text(
        "import sys, urllib.request\nurllib.request.urlopen(sys.argv[1], timeout=30).read()\n"
    )
    result = run_cli(
        "-c", config, "login", env={**env, "BROWSER": f"{sys.executable} {browser} %s"}
    )
    assert result.code == 0, result.stderr
    assert "signed in" in result.stderr and "code_challenge_method=S256" in result.stderr
    assert "authorization_code" in oauth_server.grants
    assert saved(tmp_path)["flow"] == "browser"
    fetched = run_cli("-c", config, "fetch", env=env)
    assert fetched.code == 0, fetched.stderr


def test_client_credentials_need_no_login(tmp_path, oauth_server, oauth_dovecot, https_server, env):
    user = oauth_dovecot.add_user()
    oauth_server.app_user = user.name
    user.append(export_mail(https_server.add("/e/c.csv", b"id\n3\n"), token="tok-c"))
    config = monitor_file(tmp_path, user, oauth_server, flow="client-credentials")
    result = run_cli("-c", config, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    assert (tmp_path / "out" / "c.csv").exists()
    assert oauth_server.grants == ["client_credentials"]
    assert APP_SECRET not in json.dumps(saved(tmp_path))


def test_an_expired_access_token_is_refreshed_and_the_rotated_token_saved(
    tmp_path, oauth_server, oauth_dovecot, https_server, env
):
    oauth_server.access_lifetime = 1.0
    user = oauth_dovecot.add_user()
    config = monitor_file(tmp_path, user, oauth_server, kind="pop3")
    device_login(config, oauth_server, user, env)
    first = saved(tmp_path)
    wait_for(lambda: oauth_server.username_for(first["access_token"]) is None, timeout=5)
    user.append(export_mail(https_server.add("/e/p.csv", b"id\n9\n"), token="tok-p"))
    result = run_cli("-c", config, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    assert (tmp_path / "out" / "p.csv").exists()
    second = saved(tmp_path)
    assert second["refresh_token"] != first["refresh_token"]
    assert oauth_server.active_refresh_tokens() == [second["refresh_token"]]
    assert oauth_server.grants.count("refresh_token") == 1


def test_a_refused_refresh_is_one_line_naming_the_provider_error_and_the_fix(
    tmp_path, oauth_server, oauth_dovecot, env
):
    oauth_server.access_lifetime = 1.0
    user = oauth_dovecot.add_user()
    config = monitor_file(tmp_path, user, oauth_server)
    device_login(config, oauth_server, user, env)
    oauth_server.fail_refresh(
        "invalid_grant",
        "AADSTS700082: The refresh token has expired due to inactivity. The token was issued "
        "on 2026-08-01 and was inactive for 90.00:00:00.\r\nTrace ID: 1",
    )
    time.sleep(1.1)  # the access token's life
    result = run_cli("-c", config, "run", "--once", env=env)
    assert result.code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, result.stderr
    assert "AADSTS700082" in errors[0] and "90 days" in errors[0]
    assert "login" in errors[0] and "Trace ID" not in errors[0]


def test_a_watcher_renews_its_token_across_expiries_and_reconnects(
    tmp_path, oauth_server, oauth_dovecot, https_server, env
):
    oauth_server.access_lifetime = 2.0
    user = oauth_dovecot.add_user()
    config = monitor_file(tmp_path, user, oauth_server, top={"poll_interval": "1s"})
    device_login(config, oauth_server, user, env)
    log_file = tmp_path / "state" / "log" / "export_monitor.777.log"
    watcher = Watcher(config, env=env)
    try:
        wait_for_cycles(log_file)
        for n in range(3):
            # The token used for the last login expires; a reconnect needs a new one.
            used = saved(tmp_path)["access_token"]
            wait_for(lambda used=used: oauth_server.username_for(used) is None, timeout=10)
            oauth_dovecot.restart()
            link = https_server.add(f"/e/w{n}.csv", f"id\n{n}\n".encode())
            user.append(export_mail(link, token=f"tok-w{n}"))
            wait_for(lambda n=n: (tmp_path / "out" / f"w{n}.csv").exists(), timeout=60)
        code, err = watcher.stop()
    finally:
        watcher.kill()
    assert code == 0, err
    assert oauth_server.grants.count("refresh_token") >= 3


def test_login_without_oauth_monitors_says_what_to_do(tmp_path, mail_user, env):
    config = write_config(tmp_path, config_data(tmp_path / "state", imap_table(mail_user)))
    result = run_cli("-c", config, "login", env=env)
    assert result.code == 2
    assert 'no selected monitor has auth = "oauth2"' in result.stderr


PROVIDER = Provider("Microsoft", "https://t", None, None, (), "the Microsoft Entra admin center")


@pytest.mark.parametrize(
    ("description", "words"),
    [
        ("AADSTS700082: The refresh token has expired due to inactivity.", "90 days"),
        ("AADSTS65001: The user or administrator has not consented", "grants consent"),
        ("AADSTS70043: The refresh token has expired due to a sign-in frequency", "frequency"),
        ("AADSTS7000215: Invalid client secret provided.", "app registration"),
    ],
)
def test_entra_errors_are_explained(description, words):
    error = flows.explain(
        PROVIDER,
        {"error": "invalid_grant", "error_description": description},
        "exportmon -c m.toml login",
    )
    assert isinstance(error, SignInError) and not error.retryable
    assert words in error.one_line() and description.split(":")[0] in error.one_line()


def test_alerts_go_out_by_submission_with_the_same_sign_in(
    tmp_path, oauth_server, tls_ca, https_server, env
):
    """XOAUTH2 on SMTP submission: Dovecot validates the token at the introspection
    endpoint and relays the alert to the recording SMTP server."""
    relay = SmtpServer()
    relay.start()
    try:
        with introspecting_dovecot(tls_ca, oauth_server, submission_relay=relay) as dovecot:
            user = dovecot.add_user()
            # A link that is gone: a failure, which is alerted by mail.
            user.append(export_mail(https_server.url("/gone.csv"), token="tok-gone"))
            config = monitor_file(
                tmp_path,
                user,
                oauth_server,
                top={
                    "alerts": {
                        "smtp_url": f"submission://127.0.0.1:{dovecot.submission_port}",
                        "smtp_auth": "oauth2",
                        "smtp_ca_file": str(tls_ca.ca_file),
                        "from": f"{user.name}@example.com",
                        "to": ["ops@example.com"],
                    }
                },
            )
            device_login(config, oauth_server, user, env)
            checked = oauth_server.introspections
            result = run_cli("-c", config, "run", "--once", env=env)
            assert result.code != 0
            (mail,) = relay.wait_for_messages(1, timeout=30)
            assert "ops@example.com" in mail.rcpt_tos
            assert oauth_server.introspections > checked + 1  # IMAP and submission
            assert saved(tmp_path)["access_token"] not in result.stderr
    finally:
        relay.stop()


def test_smtp_oauth2_needs_the_mailbox_sign_in(tmp_path):
    data = config_data(tmp_path / "state", {"kind": "dir", "path": str(tmp_path)})
    data["alerts"] = {
        "smtp_url": "submission://smtp.example.com",
        "smtp_auth": "oauth2",
        "to": ["ops@example.com"],
    }
    result = run_cli("-c", write_config(tmp_path / "monitors", data), "status")
    assert result.code == 2
    assert "alerts.smtp_auth" in result.stderr and "exportmon login" in result.stderr


def test_status_shows_the_renewal_and_warns_before_the_sign_in_ends(
    tmp_path, oauth_server, oauth_dovecot, env
):
    user = oauth_dovecot.add_user()
    config = monitor_file(tmp_path, user, oauth_server)
    result = run_cli("-c", config, "status", "--json", env=env)
    (monitor,) = json.loads(result.stdout)["monitors"]
    assert monitor["state"] == "error" and "exportmon" in monitor["sign_in"]["problem"]

    device_login(config, oauth_server, user, env)
    result = run_cli("-c", config, "status", "--json", env=env)
    (monitor,) = json.loads(result.stdout)["monitors"]
    assert monitor["sign_in"]["signed_in"] and monitor["sign_in"]["renewed_at"]
    assert "problem" not in monitor["sign_in"]

    # The provider said the refresh token ends in two days: status warns.
    path = tmp_path / "state" / "oauth-token.json"
    tokens = json.loads(path.read_text())
    tokens["refresh_expires_at"] = time.time() + 2 * 86400
    path.write_text(json.dumps(tokens))
    result = run_cli("-c", config, "status", "--json", env=env)
    (monitor,) = json.loads(result.stdout)["monitors"]
    assert monitor["state"] == "warning"
    assert "expires in" in monitor["reason"] and "login" in monitor["reason"]
    table = run_cli("-c", config, "status", env={**env, "COLUMNS": "80"})
    assert "expires in" in table.stdout + table.stderr
