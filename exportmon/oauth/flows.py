"""The OAuth2 grants exportmon speaks to a provider's token endpoint.

* :func:`device_flow` — the device authorization grant (RFC 8628): show a code and
  an address, wait while the user signs in elsewhere;
* :func:`browser_flow` — the authorization code grant with PKCE (RFC 7636) and a
  loopback redirect (RFC 8252): the browser comes back to ``http://127.0.0.1:<port>/``;
* :func:`client_credentials` — app-only access, no user;
* :func:`refresh` — a new access token (and, where the provider rotates them, a new
  refresh token) from a refresh token.

Each returns the token endpoint's JSON answer. Errors become one-line
:class:`~exportmon.errors.SignInError` messages naming the provider's error code
and what to do (:func:`explain`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from exportmon import json_answers, redact
from exportmon.errors import ConnectionFailed, SignInError
from exportmon.net.tls import client_context
from exportmon.oauth.providers import Provider

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: How long a token endpoint may take to answer.
TIMEOUT = 30.0
#: How long ``browser`` waits for the browser to come back.
BROWSER_WAIT = 300.0
#: Largest answer read from a token endpoint.
MAX_ANSWER = 1_000_000

#: What the well-known error codes of Microsoft Entra mean for exportmon's user.
ENTRA_ERRORS = {
    "AADSTS700082": "the sign-in expired after 90 days without use",
    "AADSTS70008": "the sign-in has expired",
    "AADSTS50173": "the sign-in was revoked (a password change or an admin)",
    "AADSTS70043": "a sign-in frequency policy (Conditional Access) ended the sign-in",
    "AADSTS65001": "the app has no consent for these permissions",
    "AADSTS50076": "the tenant requires multi-factor authentication for this sign-in",
    "AADSTS50079": "the tenant requires multi-factor authentication for this sign-in",
    "AADSTS53003": "a Conditional Access policy blocked the sign-in",
    "AADSTS700016": "the app (oauth_client_id) is not registered in this tenant",
    "AADSTS7000215": "the client secret is wrong or has expired",
    "AADSTS7000218": "the app is confidential: it needs oauth_client_secret",
    "AADSTS90002": "the tenant (oauth_tenant) does not exist",
    "AADSTS70000": "the sign-in has expired or been revoked",
}


def explain(provider: Provider, answer: dict[str, Any], login_hint: str) -> SignInError:
    """One line for a token endpoint's error answer: what it means and what to do."""
    error = str(answer.get("error") or "error")
    description = str(answer.get("error_description") or "").strip()
    code = description.split(":", 1)[0] if description.startswith("AADSTS") else ""
    meaning = ENTRA_ERRORS.get(code)
    if code == "AADSTS65001":
        hint = f"an admin grants consent in {provider.console}, or sign in again: {login_hint}"
    elif code in ("AADSTS700016", "AADSTS90002", "AADSTS7000215", "AADSTS7000218"):
        hint = f"check the app registration in {provider.console} and the config"
    elif error in ("invalid_grant", "interaction_required") or code:
        hint = f"sign in again: {login_hint}"
    elif error == "invalid_client":
        hint = f"check oauth_client_id and oauth_client_secret against {provider.console}"
    else:
        hint = f"sign in again: {login_hint}"
    first_line = redact.redact(description.splitlines()[0][:200]) if description else ""
    what = f"{provider.name} refused the sign-in: {error}"
    if meaning:
        what += f" ({code}: {meaning})"
    elif first_line:
        what += f" ({first_line})"
    return SignInError(what, hint=hint)


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST ``form`` to a token endpoint; (HTTP status, JSON answer).

    TLS is verified against the system's CAs (``SSL_CERT_FILE`` adds one).
    """
    data = urlencode(form).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": "exportmon",
        },
        method="POST",
    )
    context = client_context()
    host = urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            status, raw = response.status, response.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_ANSWER)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ConnectionFailed(
                f"the token endpoint {host} has a certificate that is not trusted: "
                f"{reason.verify_message}",
                hint="for a private CA set SSL_CERT_FILE to its PEM file",
            ) from None
        raise ConnectionFailed(f"cannot reach the token endpoint {host}: {reason}") from None
    except (OSError, TimeoutError) as exc:
        raise ConnectionFailed(f"cannot reach the token endpoint {host}: {exc}") from None
    try:
        answer = json_answers.loads(raw or b"{}")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ConnectionFailed(
            f"the token endpoint {host} answered HTTP {status} without JSON",
            hint="check the endpoint URL",
        )
    for key in ("access_token", "refresh_token", "id_token", "device_code"):
        if isinstance(answer.get(key), str):
            redact.register(answer[key])
    return status, answer


def _token_request(
    provider: Provider, form: dict[str, str | None], login_hint: str
) -> dict[str, Any]:
    status, answer = post_form(provider.token_url, {k: v for k, v in form.items() if v})
    if status != 200 or "access_token" not in answer:
        raise explain(provider, answer, login_hint)
    return answer


def device_flow(
    provider: Provider,
    client_id: str,
    scopes: tuple[str, ...],
    *,
    client_secret: str | None = None,
    show: Callable[[str], None],
    login_hint: str,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run the device authorization grant; the token endpoint's answer."""
    if not provider.device_url:
        raise SignInError(
            "no device authorization endpoint is configured",
            hint='set oauth_device_url, or oauth_flow = "browser"',
        )
    status, start = post_form(
        provider.device_url, {"client_id": client_id, "scope": " ".join(scopes)}
    )
    if status != 200 or "device_code" not in start:
        raise explain(provider, start, login_hint)
    where = (
        start.get("verification_uri_complete")
        or start.get("verification_uri")
        or (start.get("verification_url"))
    )
    expires_in = float(start.get("expires_in") or 900)
    show(
        f"To sign in, open {where} and enter the code {start.get('user_code')} "
        f"(within {int(expires_in // 60) or 1} minutes)."
    )
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + expires_in
    form = {
        "grant_type": DEVICE_GRANT,
        "device_code": start["device_code"],
        "client_id": client_id,
        "client_secret": client_secret,
    }
    while time.monotonic() < deadline:
        sleep(interval)
        status, answer = post_form(provider.token_url, {k: v for k, v in form.items() if v})
        if status == 200 and "access_token" in answer:
            return answer
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5  # RFC 8628 §3.5: five seconds more for this and later polls
            continue
        if error == "expired_token":
            break
        if error == "access_denied":
            raise SignInError("the sign-in was declined", hint=f"try again: {login_hint}")
        raise explain(provider, answer, login_hint)
    raise SignInError("the code expired before the sign-in was done", hint=f"again: {login_hint}")


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Callback(BaseHTTPRequestHandler):
    """The loopback redirect target: takes the one request that carries the code."""

    server: _CallbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        done = "error" not in query
        page = (
            b"<!doctype html><title>exportmon</title><p>Signed in. You can close this page."
            if done
            else b"<!doctype html><title>exportmon</title><p>The sign-in did not work: "
            b"see the terminal."
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
        self.server.result = query
        self.server.arrived.set()


class _CallbackServer(HTTPServer):
    result: dict[str, str]
    arrived: threading.Event


def browser_flow(
    provider: Provider,
    client_id: str,
    scopes: tuple[str, ...],
    *,
    client_secret: str | None = None,
    show: Callable[[str], None],
    login_hint: str,
    open_browser: bool = True,
    extra: dict[str, str] | None = None,
    wait: float = BROWSER_WAIT,
) -> dict[str, Any]:
    """Run the authorization code grant with PKCE and a loopback redirect."""
    if not provider.authorize_url:
        raise SignInError(
            "no authorization endpoint is configured",
            hint='set oauth_authorize_url, or oauth_flow = "device"',
        )
    verifier, challenge = _pkce_pair()
    state = secrets.token_urlsafe(16)
    server = _CallbackServer(("127.0.0.1", 0), _Callback)
    server.result = {}
    server.arrived = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        query = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **(extra or {}),
        }
        separator = "&" if "?" in provider.authorize_url else "?"
        address = provider.authorize_url + separator + urlencode(query)
        show(f"To sign in, open this address in a browser on this machine:\n{address}")
        if open_browser:
            webbrowser.open(address)
        if not server.arrived.wait(wait):
            raise SignInError(
                f"the browser did not come back within {int(wait)} s",
                hint=f'try again, or use oauth_flow = "device": {login_hint}',
            )
        result = server.result
    finally:
        server.shutdown()
        server.server_close()
    if result.get("state") != state:
        raise SignInError("the sign-in answer does not match this sign-in (state)")
    if "error" in result:
        raise explain(
            provider,
            {"error": result["error"], "error_description": result.get("error_description", "")},
            login_hint,
        )
    return _token_request(
        provider,
        {
            "grant_type": "authorization_code",
            "code": result.get("code"),
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": verifier,
        },
        login_hint,
    )


def client_credentials(
    provider: Provider,
    client_id: str,
    scopes: tuple[str, ...],
    *,
    client_secret: str | None,
    login_hint: str,
) -> dict[str, Any]:
    """App-only tokens (no refresh token: a new one is asked for when it expires)."""
    if not client_secret:
        raise SignInError(
            "the client-credentials flow needs the app's secret",
            hint="set oauth_client_secret_env or oauth_client_secret_command",
        )
    return _token_request(
        provider,
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": " ".join(scopes),
        },
        login_hint,
    )


def refresh(
    provider: Provider,
    client_id: str,
    refresh_token: str,
    scopes: tuple[str, ...],
    *,
    client_secret: str | None = None,
    login_hint: str,
) -> dict[str, Any]:
    """A new access token from ``refresh_token``."""
    return _token_request(
        provider,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": " ".join(scopes) or None,
        },
        login_hint,
    )
