"""OAuth2 sign-in for mailboxes: sign in once with ``exportmon login``, refreshed for ever.

:func:`sign_in` runs the configured flow (device code, browser with PKCE, or
client credentials) and saves the tokens in the monitor's state folder
(:mod:`exportmon.oauth.store`). :func:`access_token` is what IMAP, POP3, SMTP and
Microsoft Graph call before every login: it returns a valid access token,
refreshing it (and saving a rotated refresh token atomically *before* using the
new access token) when it is about to expire, when the refresh token has not been
used for a week, or always for app-only tokens that have expired.

Errors are :class:`~exportmon.errors.SignInError`: one line with the provider's
error code, what it means and the fix (usually ``exportmon login -c NAME``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exportmon.errors import SignInError
from exportmon.hooks.credentials import resolve
from exportmon.oauth import flows, store
from exportmon.oauth.providers import Provider, flow_name, provider_for

#: Refresh when less than this is left of an access token's life (at most a quarter of it).
REFRESH_MARGIN = 300.0
#: A refresh token not used for this long is used anyway, so that it never dies of
#: inactivity (Microsoft's refresh tokens expire after 90 days unused).
REFRESH_AT_LEAST_EVERY = 7 * 24 * 3600.0
#: ``status`` warns this long before a refresh token's known expiry.
EXPIRY_WARNING = 7 * 24 * 3600.0

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(root: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(Path(root).resolve(), threading.Lock())


def login_hint(monitor: Any) -> str:
    return (
        f"exportmon -c {monitor.path or monitor.name} login"
        if monitor.path
        else ("exportmon login")
    )


def _client_secret(source: Any) -> str | None:
    secret = source.oauth_client_secret_source()
    return resolve(secret) if secret.configured else None


def _client_id(source: Any) -> str:
    if not source.oauth_client_id:
        raise SignInError(
            'auth = "oauth2" needs the app\'s client id',
            hint="set source.oauth_client_id (see the sign-in page of the docs)",
        )
    return str(source.oauth_client_id)


def sign_in(
    monitor: Any,
    *,
    flow: str | None = None,
    show: Callable[[str], None] = print,
    open_browser: bool = True,
) -> store.Tokens:
    """Run the sign-in flow for ``monitor`` and save its tokens; the tokens."""
    source = monitor.source
    flow = flow or flow_name(source)
    provider = provider_for(source, flow)
    client_id = _client_id(source)
    secret = _client_secret(source)
    hint = login_hint(monitor)
    if flow == "device":
        answer = flows.device_flow(
            provider, client_id, provider.scopes, client_secret=secret, show=show, login_hint=hint
        )
    elif flow == "browser":
        extra = {"access_type": "offline", "prompt": "consent"} if provider.name == "Google" else {}
        answer = flows.browser_flow(
            provider,
            client_id,
            provider.scopes,
            client_secret=secret,
            show=show,
            login_hint=hint,
            open_browser=open_browser,
            extra=extra,
        )
    else:
        answer = flows.client_credentials(
            provider, client_id, provider.scopes, client_secret=secret, login_hint=hint
        )
    tokens = store.Tokens(
        provider=provider.name, client_id=client_id, flow=flow, scopes=list(provider.scopes)
    )
    _take(tokens, answer)
    tokens.signed_in_at = tokens.refreshed_at
    store.save(monitor.dirs.root, tokens)
    return tokens


def _take(tokens: store.Tokens, answer: dict[str, Any]) -> None:
    """Copy a token endpoint's answer into ``tokens``."""
    lifetime = float(answer.get("expires_in") or 3600)
    tokens.access_token = str(answer["access_token"])
    tokens.expires_at = time.time() + lifetime
    tokens.extra["lifetime"] = lifetime
    if answer.get("refresh_token"):
        tokens.refresh_token = str(answer["refresh_token"])
        refresh_life = answer.get("refresh_token_expires_in")
        tokens.refresh_expires_at = time.time() + float(refresh_life) if refresh_life else None
    tokens.refreshed_at = store.now_text()
    tokens.extra["refreshed_epoch"] = time.time()
    tokens.register_secrets()


def _needs_refresh(tokens: store.Tokens, at: float) -> bool:
    lifetime = float(tokens.extra.get("lifetime") or 3600)
    margin = min(REFRESH_MARGIN, lifetime / 4)
    if tokens.expires_at - at <= margin:
        return True
    last = tokens.extra.get("refreshed_epoch") or 0
    return bool(tokens.refresh_token) and at - float(last) >= REFRESH_AT_LEAST_EVERY


def access_token(monitor: Any) -> str:
    """A valid access token for ``monitor``'s mailbox, refreshed when needed."""
    root = monitor.dirs.root
    with _lock(root):
        tokens = store.load(root)
        source = monitor.source
        if tokens is None:
            if flow_name(source) == "client-credentials":
                return sign_in(monitor).access_token
            raise SignInError(
                "nobody has signed in for this monitor yet",
                hint=f"run {login_hint(monitor)}",
            )
        now = time.time()
        if not _needs_refresh(tokens, now):
            return tokens.access_token
        provider = provider_for(source, tokens.flow)
        if tokens.refresh_token is None:
            if tokens.flow == "client-credentials":
                return sign_in(monitor).access_token
            raise SignInError(
                "the saved sign-in has no refresh token", hint=f"run {login_hint(monitor)}"
            )
        used = tokens.refresh_token
        try:
            answer = flows.refresh(
                provider,
                tokens.client_id,
                used,
                tuple(tokens.scopes),
                client_secret=_client_secret(source),
                login_hint=login_hint(monitor),
            )
        except SignInError:
            # Another process (a `login`, a second command) may have rotated it meanwhile.
            newer = store.load(root)
            if newer is None or newer.refresh_token == used:
                raise
            tokens = newer
            if not _needs_refresh(tokens, time.time()):
                return tokens.access_token
            assert tokens.refresh_token is not None
            answer = flows.refresh(
                provider,
                tokens.client_id,
                tokens.refresh_token,
                tuple(tokens.scopes),
                client_secret=_client_secret(source),
                login_hint=login_hint(monitor),
            )
        _take(tokens, answer)
        # The rotated refresh token is on disk before the new access token is used.
        store.save(root, tokens)
        return tokens.access_token


def sign_in_state(monitor: Any) -> dict[str, Any] | None:
    """What ``status`` shows about a monitor's sign-in (None: not an OAuth2 monitor)."""
    if getattr(monitor.source, "auth", None) != "oauth2":
        return None
    try:
        tokens = store.load(monitor.dirs.root)
    except SignInError as exc:
        return {"signed_in": False, "problem": exc.one_line()}
    if tokens is None:
        if flow_name(monitor.source) == "client-credentials":
            return {"signed_in": True, "flow": "client-credentials"}
        return {"signed_in": False, "problem": f"not signed in: run {login_hint(monitor)}"}
    state: dict[str, Any] = {
        "signed_in": True,
        "provider": tokens.provider,
        "flow": tokens.flow,
        "signed_in_at": tokens.signed_in_at,
        "renewed_at": tokens.refreshed_at,
    }
    if tokens.refresh_expires_at:
        left = tokens.refresh_expires_at - time.time()
        state["expires_at"] = datetime.fromtimestamp(
            tokens.refresh_expires_at, timezone.utc
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        if left <= EXPIRY_WARNING:
            state["problem"] = (
                f"the sign-in expires in {max(0, int(left // 3600))} h: "
                f"run {login_hint(monitor)} before then"
            )
    return state


__all__ = ["Provider", "access_token", "provider_for", "sign_in", "sign_in_state"]
