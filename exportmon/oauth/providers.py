"""Where each OAuth2 provider's endpoints are and which scopes a mailbox needs.

Microsoft (Entra ID) and Google are built in; ``oauth_provider = "custom"`` takes
the three endpoint URLs from the config. Scopes default per provider, flow and
what the token is for (a mailbox over IMAP/POP3/SMTP, or Microsoft Graph);
``oauth_scopes`` replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exportmon.errors import ConfigError

MICROSOFT_LOGIN = "https://login.microsoftonline.com"
#: Delegated access to Exchange Online's mail protocols; one token serves all three.
MICROSOFT_MAIL_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/POP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
)
#: App-only (client credentials) access to IMAP and POP3 of Exchange Online.
MICROSOFT_APP_MAIL_SCOPES = ("https://outlook.office365.com/.default",)
MICROSOFT_GRAPH_SCOPES = ("https://graph.microsoft.com/Mail.ReadWrite", "offline_access")
MICROSOFT_APP_GRAPH_SCOPES = ("https://graph.microsoft.com/.default",)
GOOGLE_MAIL_SCOPES = ("https://mail.google.com/",)


@dataclass(frozen=True)
class Provider:
    """One provider's endpoints and the defaults a sign-in uses."""

    name: str
    token_url: str
    device_url: str | None
    authorize_url: str | None
    scopes: tuple[str, ...]
    #: Where a user registers the app and grants consent, for error hints.
    console: str


def provider_name(source: Any) -> str:
    """``oauth_provider``, or the one the host names (Microsoft for Graph)."""
    if source.oauth_provider:
        return str(source.oauth_provider)
    host = (getattr(source, "host", "") or "").lower()
    if source.kind == "graph" or host.endswith(("office365.com", "outlook.com", "office.com")):
        return "microsoft"
    if host.endswith(("gmail.com", "googlemail.com", "google.com")):
        return "google"
    raise ConfigError(
        "oauth_provider is not set and the host does not say which provider it is",
        key="source.oauth_provider",
        hint='set oauth_provider = "microsoft", "google" or "custom"',
    )


def flow_name(source: Any) -> str:
    """``oauth_flow``, or the provider's usual one: browser for Google, else device."""
    if source.oauth_flow:
        return str(source.oauth_flow)
    return "browser" if provider_name(source) == "google" else "device"


def provider_for(source: Any, flow: str | None = None) -> Provider:
    """The provider a ``[source]`` table signs in with (endpoints and default scopes).

    Raises :class:`ConfigError` for a custom provider without its endpoints or a
    flow the provider does not offer for mail.
    """
    name = provider_name(source)
    flow = flow or flow_name(source)
    graph = source.kind == "graph"
    app_only = flow == "client-credentials"
    if name == "microsoft":
        tenant = source.oauth_tenant or ("organizations" if app_only else "common")
        if app_only and tenant in ("common", "organizations", "consumers"):
            raise ConfigError(
                "the client-credentials flow needs the tenant",
                key="source.oauth_tenant",
                hint='set oauth_tenant = "contoso.onmicrosoft.com" (or the tenant id)',
            )
        base = f"{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0"
        scopes: tuple[str, ...]
        if graph:
            scopes = MICROSOFT_APP_GRAPH_SCOPES if app_only else MICROSOFT_GRAPH_SCOPES
        else:
            scopes = MICROSOFT_APP_MAIL_SCOPES if app_only else MICROSOFT_MAIL_SCOPES
        provider = Provider(
            "Microsoft",
            f"{base}/token",
            f"{base}/devicecode",
            f"{base}/authorize",
            scopes,
            "the Microsoft Entra admin center (App registrations)",
        )
    elif name == "google":
        if flow == "device":
            raise ConfigError(
                "Google's device flow does not allow the mail scope",
                key="source.oauth_flow",
                hint='use oauth_flow = "browser" (it works over SSH with a forwarded port too)',
            )
        if app_only:
            raise ConfigError(
                "Google has no client-credentials flow for Gmail",
                key="source.oauth_flow",
                hint='use oauth_flow = "browser"',
            )
        provider = Provider(
            "Google",
            "https://oauth2.googleapis.com/token",
            "https://oauth2.googleapis.com/device/code",
            "https://accounts.google.com/o/oauth2/v2/auth",
            GOOGLE_MAIL_SCOPES,
            "the Google Cloud console (APIs & Services, Credentials)",
        )
    else:
        if not source.oauth_token_url:
            raise ConfigError(
                'oauth_provider = "custom" needs the token endpoint',
                key="source.oauth_token_url",
                hint="set oauth_token_url (and oauth_device_url or oauth_authorize_url)",
            )
        for key in ("oauth_token_url", "oauth_device_url", "oauth_authorize_url"):
            _check_endpoint(getattr(source, key), key)
        provider = Provider(
            "the OAuth2 provider",
            source.oauth_token_url,
            source.oauth_device_url,
            source.oauth_authorize_url,
            (),
            "your provider's app registration",
        )
    if source.oauth_scopes:
        provider = Provider(
            provider.name,
            provider.token_url,
            provider.device_url,
            provider.authorize_url,
            tuple(source.oauth_scopes),
            provider.console,
        )
    return provider


def _check_endpoint(url: str | None, key: str) -> None:
    """An endpoint is https (plain http only on a loopback address)."""
    if not url:
        return
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError(
            "must be an https:// URL", key=f"source.{key}", hint="tokens never travel unencrypted"
        )
