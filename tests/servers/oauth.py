"""A local OAuth2 authorization server speaking the protocol the big providers speak.

:class:`OAuthServer` implements, over HTTPS on 127.0.0.1:

* ``POST /devicecode`` — the device authorization grant's first step (RFC 8628 §3.1);
* ``GET /authorize`` — the authorization code grant with PKCE (RFC 7636, ``S256``
  only): the "user" named by :attr:`OAuthServer.browser_user` signs in at once and
  the server redirects to the loopback ``redirect_uri`` with the code and state;
* ``POST /token`` — grant types ``urn:ietf:params:oauth:grant-type:device_code``
  (answering ``authorization_pending`` until :meth:`OAuthServer.approve`, and
  ``slow_down`` when polled faster than the interval), ``authorization_code`` (the
  PKCE verifier checked), ``refresh_token`` (rotating: every use returns a new
  refresh token and retires the old one) and ``client_credentials`` (the client
  secret checked);
* ``POST /introspect`` — token introspection (RFC 7662) for Dovecot's ``oauth2``
  passdb: ``{"active": true, "username": ...}`` while an access token is valid.

Access tokens live :attr:`OAuthServer.access_lifetime` seconds, so tests can let
them expire during a run. :meth:`OAuthServer.fail_refresh` makes the next refresh
fail the way Microsoft Entra does (``invalid_grant`` with an ``AADSTS`` code).
Every token request is recorded in :attr:`OAuthServer.grants`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from servers import LOCALHOST
from servers.https import QuietHandler, start_https, stop_https
from servers.tlsca import ServerCert

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    interval: float
    expires_at: float
    approved_by: str | None = None
    last_poll: float = 0.0


@dataclass
class Grant:
    """One refresh token and what it stands for."""

    username: str
    client_id: str
    scope: str
    active: bool = True


@dataclass
class OAuthServer:
    """The authorization server; see the module docstring.

    Attributes:
        cert: The HTTPS certificate (from :mod:`servers.tlsca`).
        clients: Registered client ids and their secret (``None``: a public client).
        access_lifetime: Seconds an access token is valid.
        browser_user: Who signs in at ``/authorize``.
        grants: Every ``/token`` request's grant type, in order.
    """

    cert: ServerCert
    clients: dict[str, str | None] = field(default_factory=dict)
    access_lifetime: float = 3600.0
    device_interval: float = 0.2
    browser_user: str = ""
    #: The mailbox an app-only (client credentials) token is for.
    app_user: str = ""
    grants: list[str] = field(default_factory=list)
    introspections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceCode] = {}
        self._codes: dict[str, dict[str, str]] = {}
        self._refresh: dict[str, Grant] = {}
        self._access: dict[str, tuple[str, float]] = {}
        self._refresh_failure: tuple[str, str] | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- what tests do ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("OAuthServer has not been started yet")
        return f"https://{LOCALHOST}:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def approve(self, username: str, user_code: str | None = None) -> bool:
        """Sign ``username`` in for the pending device code (or the one given); True if one was."""
        with self._lock:
            for device in self._devices.values():
                if device.approved_by is None and user_code in (None, device.user_code):
                    device.approved_by = username
                    return True
        return False

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d.user_code for d in self._devices.values() if d.approved_by is None]

    def fail_refresh(self, error: str, description: str) -> None:
        """Answer the next refresh requests with this error until :meth:`heal`."""
        with self._lock:
            self._refresh_failure = (error, description)

    def heal(self) -> None:
        with self._lock:
            self._refresh_failure = None

    def active_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [token for token, grant in self._refresh.items() if grant.active]

    def username_for(self, access_token: str) -> str | None:
        """The user an access token belongs to while it is valid, else ``None``."""
        with self._lock:
            found = self._access.get(access_token)
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def issue(self, username: str, client_id: str = "exportmon-test", scope: str = "") -> dict:
        """Tokens as if ``username`` had signed in (for tests that skip the sign-in)."""
        with self._lock:
            return self._tokens(username, client_id, scope, refresh=True)

    # -- the protocol -----------------------------------------------------------------

    def _tokens(self, username: str, client_id: str, scope: str, *, refresh: bool) -> dict:
        access = "at-" + secrets.token_urlsafe(24)
        self._access[access] = (username, time.time() + self.access_lifetime)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": int(self.access_lifetime) or 1,
            "scope": scope,
        }
        if refresh:
            token = "rt-" + secrets.token_urlsafe(24)
            self._refresh[token] = Grant(username, client_id, scope)
            answer["refresh_token"] = token
        return answer

    def _client_ok(self, form: dict[str, str]) -> tuple[bool, str]:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            return False, f"AADSTS700016: Application with identifier '{client_id}' was not found"
        secret = self.clients[client_id]
        if secret is not None and form.get("client_secret") != secret:
            return False, "AADSTS7000215: Invalid client secret provided."
        return True, ""

    def device_authorization(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("client_id") not in self.clients:
            return 400, {"error": "unauthorized_client", "error_description": "unknown client"}
        user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
        device = DeviceCode(
            device_code="dc-" + secrets.token_urlsafe(24),
            user_code=user_code,
            client_id=form["client_id"],
            scope=form.get("scope", ""),
            interval=self.device_interval,
            expires_at=time.time() + 600,
        )
        with self._lock:
            self._devices[device.device_code] = device
        return 200, {
            "device_code": device.device_code,
            "user_code": user_code,
            "verification_uri": self.url("/device"),
            "expires_in": 600,
            "interval": device.interval,
            "message": f"To sign in, open {self.url('/device')} and enter the code {user_code}.",
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str]]:
        """The redirect of a successful sign-in: (302, headers) or (400, error)."""
        if query.get("client_id") not in self.clients:
            return 400, {"error": "unauthorized_client"}
        redirect = query.get("redirect_uri", "")
        host = urlsplit(redirect).hostname
        if not redirect.startswith("http://") or host not in ("127.0.0.1", "localhost"):
            return 400, {"error": "invalid_request", "error_description": "redirect_uri"}
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, {"error": "invalid_request", "error_description": "PKCE S256 required"}
        if query.get("response_type") != "code":
            return 400, {"error": "unsupported_response_type"}
        code = "ac-" + secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {
                "client_id": query["client_id"],
                "redirect_uri": redirect,
                "challenge": query["code_challenge"],
                "scope": query.get("scope", ""),
                "username": self.browser_user,
            }
        params = {"code": code, "state": query.get("state", "")}
        return 302, {"Location": redirect + ("&" if "?" in redirect else "?") + urlencode(params)}

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.grants.append(grant_type)
        ok, why = self._client_ok(form)
        if not ok:
            return 401, {"error": "invalid_client", "error_description": why}
        with self._lock:
            if grant_type == DEVICE_GRANT:
                return self._device_token(form)
            if grant_type == "authorization_code":
                return self._code_token(form)
            if grant_type == "refresh_token":
                return self._refresh_token(form)
            if grant_type == "client_credentials":
                user = self.app_user or "app:" + form["client_id"]
                return 200, self._tokens(
                    user, form["client_id"], form.get("scope", ""), refresh=False
                )
        return 400, {"error": "unsupported_grant_type"}

    def _device_token(self, form: dict[str, str]) -> tuple[int, dict]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.expires_at < time.time():
            return 400, {"error": "expired_token"}
        now = time.monotonic()
        too_fast = now - device.last_poll < device.interval * 0.9
        device.last_poll = now
        if too_fast:
            device.interval += 0.2
            return 400, {"error": "slow_down"}
        if device.approved_by is None:
            return 400, {"error": "authorization_pending"}
        del self._devices[device.device_code]
        return 200, self._tokens(device.approved_by, device.client_id, device.scope, refresh=True)

    def _code_token(self, form: dict[str, str]) -> tuple[int, dict]:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or code["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "unknown code"}
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != code["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        return 200, self._tokens(code["username"], code["client_id"], code["scope"], refresh=True)

    def _refresh_token(self, form: dict[str, str]) -> tuple[int, dict]:
        if self._refresh_failure is not None:
            error, description = self._refresh_failure
            return 400, {"error": error, "error_description": description}
        grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or not grant.active:
            return 400, {
                "error": "invalid_grant",
                "error_description": "AADSTS70000: The provided grant has expired or been revoked.",
            }
        grant.active = False  # rotation: the old refresh token is spent
        return 200, self._tokens(grant.username, grant.client_id, grant.scope, refresh=True)

    def introspect(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.introspections += 1
        username = self.username_for(form.get("token", ""))
        if username is None:
            return 200, {"active": False}
        return 200, {"active": True, "username": username}

    # -- serving ----------------------------------------------------------------------

    def start(self) -> None:
        owner = self

        class Handler(QuietHandler):
            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                return {k: v[0] for k, v in parse_qs(raw).items()}

            def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None):
                data = json.dumps(body).encode() if status != 302 else b""
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if status != 302:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                form = self._form()
                routes = {
                    "/devicecode": owner.device_authorization,
                    "/token": owner.token,
                    "/introspect": owner.introspect,
                }
                if path not in routes:
                    self._answer(404, {"error": "not_found"})
                    return
                status, body = routes[path](form)
                self._answer(status, body)

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if split.path != "/authorize":
                    self._answer(404, {"error": "not_found"})
                    return
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                status, result = owner.authorize(query)
                if status == 302:
                    self._answer(302, {}, result)
                else:
                    self._answer(status, result)

        self._server = start_https(Handler, self.cert, "OAuth server")

    def stop(self) -> None:
        stop_https(self._server)
        self._server = None
