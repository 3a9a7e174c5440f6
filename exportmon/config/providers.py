"""Mail settings of well-known providers, guessed from an address's domain.

The OAuth2 side of a provider (endpoints, scopes, flows) is in
:mod:`exportmon.oauth.providers`; here is what ``exportmon generate`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    name: str
    host: str
    port: int = 993
    security: str = "ssl"
    archive: str = "Archive"
    #: Said in the generated config, above the source settings.
    note: str = ""
    #: True when the settings are a guess that the user must check.
    guessed: bool = False
    #: ``oauth_provider`` when the mailbox signs in with OAuth2 (``auth = "oauth2"``).
    oauth: str | None = None
    #: The docs page that says how to register the app.
    signin_doc: str | None = None
    #: A password given to ``generate`` is still used (app passwords).
    takes_password: bool = True


GMAIL = Provider(
    "Gmail / Google Workspace",
    "imap.gmail.com",
    archive="[Gmail]/All Mail",
    note="Gmail signs in with OAuth2: register an app (docs/signin-google.md),\n"
    "put its client id below, then run `exportmon -c <this file> login` once.\n"
    "An app password works too: give it to `exportmon generate`.",
    oauth="google",
    signin_doc="docs/signin-google.md",
)
MICROSOFT = Provider(
    "Outlook / Microsoft 365",
    "outlook.office365.com",
    note="Microsoft has turned off password logins: this signs in with OAuth2.\n"
    "Register an app (docs/signin-microsoft.md), put its client id below,\n"
    "then run `exportmon -c <this file> login` once.",
    oauth="microsoft",
    signin_doc="docs/signin-microsoft.md",
    takes_password=False,
)
YAHOO = Provider("Yahoo Mail", "imap.mail.yahoo.com", note="Yahoo needs an app password.")
ICLOUD = Provider(
    "iCloud Mail",
    "imap.mail.me.com",
    note="iCloud needs an app-specific password\n(appleid.apple.com > Sign-In and Security).",
)
FASTMAIL = Provider("Fastmail", "imap.fastmail.com", note="Fastmail needs an app password.")

_BY_DOMAIN = {
    "gmail.com": GMAIL, "googlemail.com": GMAIL,
    "outlook.com": MICROSOFT, "hotmail.com": MICROSOFT, "live.com": MICROSOFT,
    "msn.com": MICROSOFT, "office365.com": MICROSOFT, "onmicrosoft.com": MICROSOFT,
    "yahoo.com": YAHOO, "ymail.com": YAHOO, "rocketmail.com": YAHOO,
    "icloud.com": ICLOUD, "me.com": ICLOUD, "mac.com": ICLOUD,
    "fastmail.com": FASTMAIL, "fastmail.fm": FASTMAIL, "fastmail.net": FASTMAIL,
}  # fmt: skip


def guess_provider(address: str) -> Provider:
    """The provider serving ``address``, or an ``imap.<domain>`` guess to be checked."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain in _BY_DOMAIN:
        return _BY_DOMAIN[domain]
    for known, provider in _BY_DOMAIN.items():
        if domain.endswith("." + known):
            return provider
    if domain.startswith(("yahoo.", "hotmail.", "outlook.", "live.")):
        return _BY_DOMAIN[domain.split(".")[0] + ".com"]
    return Provider(
        domain or "unknown",
        f"imap.{domain}" if domain else "imap.example.com",
        guessed=True,
        note=f"imap.{domain} is a guess: check the IMAP server, port and archive\n"
        "folder with your mail administrator.",
    )
