"""Client TLS contexts and one-line TLS errors, for every protocol exportmon speaks.

Every connection exportmon makes with TLS (HTTPS downloads and uploads, IMAP, POP3,
FTPS, SMTP) verifies the server certificate and host name against the system's
certificate authorities plus, optionally, one CA file from the config; the context
is built by :func:`client_context` and nowhere else. :func:`tls_error` turns a
failed handshake into the :class:`~exportmon.errors.TLSError` users read, naming the
config key that would fix it.
"""

from __future__ import annotations

import os
import ssl

from exportmon.errors import TLSError

#: OpenSSL's verify codes for an expired certificate and a host name mismatch.
_EXPIRED = 10
_WRONG_HOST = (62, 64)


def client_context(
    ca_file: str | os.PathLike[str] | None = None, *, ca_key: str = "ca_file"
) -> ssl.SSLContext:
    """A verifying client context trusting the system CAs plus ``ca_file``.

    ``ca_key`` is the config key that named ``ca_file``; a file that cannot be read
    raises a :class:`TLSError` (not retryable) naming it.
    """
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=os.fspath(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise TLSError(
                f"cannot read the CA file {ca_file} ({ca_key}): {reason}",
                hint=f"point {ca_key} at a PEM file of the certificate authority",
                retryable=False,
            ) from None
    return context


def tls_error(where: str, exc: ssl.SSLError, ca_key: str) -> TLSError:
    """A one-line :class:`TLSError` for a failed handshake with ``where``.

    ``ca_key`` is the config key (or option) that sets the CA file for this server.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == _EXPIRED:
            return TLSError(
                f"{where}: the server's certificate has expired",
                hint=f"the server must renew it; {ca_key} cannot make an expired one trusted",
            )
        if code in _WRONG_HOST:
            return TLSError(
                f"{where}: the server's certificate is for another host name",
                hint="connect by the name the certificate is for, or set "
                f"{ca_key} to the CA of a certificate issued for this name",
            )
        reason = getattr(exc, "verify_message", None) or "not trusted"
        return TLSError(
            f"{where}: certificate not trusted ({reason})",
            hint=f"set {ca_key} to the CA file of a private certificate authority",
        )
    if "WRONG_VERSION_NUMBER" in str(exc.reason or exc) or "wrong version number" in str(exc):
        return TLSError(
            f"{where} answered in plain text, not TLS: this port does not speak TLS",
            hint=PLAIN_PORT_HINTS.get(ca_key.partition(".")[0], PLAIN_PORT_HINTS[""]),
        )
    return TLSError(f"{where}: TLS handshake failed: {exc.reason or exc}")


#: What to set when a TLS connection meets a port that speaks plain text, by config table.
PLAIN_PORT_HINTS = {
    "source": 'set source.security = "starttls" for this port, or give the TLS port '
    "(IMAP 993, POP3 995) in source.port",
    "download": "the link names a plain-HTTP port with https://; the sender must fix the link",
    "alerts": "use submission:// (STARTTLS, port 587) or smtps:// (TLS, port 465) in "
    "alerts.smtp_url",
    "": "use the server's TLS port, or its plain-text mode with STARTTLS",
}
