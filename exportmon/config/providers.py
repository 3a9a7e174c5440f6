"""IMAP settings of well-known mail providers, guessed from an address's domain."""

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


GMAIL = Provider(
    "Gmail",
    "imap.gmail.com",
    archive="[Gmail]/All Mail",
    note="Gmail needs an app password (Google account > Security > App passwords)\n"
    'or OAuth2: auth = "xoauth2" with a token_command.',
)
MICROSOFT = Provider(
    "Outlook / Microsoft 365",
    "outlook.office365.com",
    note="Microsoft 365 has turned off password logins for most tenants: use\n"
    'auth = "xoauth2" with a token_command that prints an access token.',
)
YAHOO = Provider("Yahoo Mail", "imap.mail.yahoo.com", note="Yahoo needs an app password.")
ICLOUD = Provider(
    "iCloud Mail",
    "imap.mail.me.com",
    note="iCloud needs an app-specific password (appleid.apple.com > Sign-In and Security).",
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
        note=f"imap.{domain} is a guess: check the IMAP server, port and archive folder\n"
        "with your mail administrator.",
    )
