"""A throw-away certificate authority for the test servers (built on trustme).

:class:`LocalCA` writes everything as PEM files into one directory, because the
servers want file names (Dovecot's ``ssl_cert = <file``, pyftpdlib's
``certfile``) and exportmon itself is configured with a CA *file*:

* ``ca.pem`` – the trusted CA; clients verify against it.
* ``server`` – a certificate for ``127.0.0.1``, ``localhost`` and ``::1``.
* ``wrong_ca`` – the same names, but issued by a second CA nobody trusts.
* ``wrong_host`` – issued by the trusted CA, but only for ``wrong.example``.
* ``expired`` – the right names and CA, but no longer valid.

The last three exist so tests can prove that exportmon refuses bad TLS. All files
are world-readable (the directory is ``0755``) because Dovecot's unprivileged
processes run as ``nobody``; the keys protect nothing.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

#: Names the good server certificate is valid for.
SERVER_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
#: The only name the ``wrong_host`` certificate is valid for.
WRONG_HOST_NAME = "wrong.example"


@dataclass(frozen=True)
class ServerCert:
    """The PEM files of one server certificate.

    Attributes:
        label: Short name, also the file name stem (``<label>-cert.pem`` …).
        hostnames: The subjectAltName entries the certificate was issued for.
        cert_file: Leaf certificate followed by its issuing chain.
        key_file: The unencrypted private key.
        combined_file: Private key followed by the certificate chain, for APIs
            that take a single file.
    """

    label: str
    hostnames: tuple[str, ...]
    cert_file: Path
    key_file: Path
    combined_file: Path

    def server_context(self) -> ssl.SSLContext:
        """Return a fresh server-side :class:`ssl.SSLContext` using this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class LocalCA:
    """A trusted CA, an untrusted one, and server certificates issued by them.

    Creating the object writes all files into *directory* (which must exist).
    The object is cheap enough to build once per test session.

    Attributes:
        directory: Where the PEM files live.
        ca_file: The trusted CA certificate (give this to clients).
        wrong_ca_file: The *untrusted* CA's certificate, in case a test wants a
            client that trusts only that one.
        server: Good certificate for 127.0.0.1 / localhost / ::1.
        wrong_ca: Same names, issued by the untrusted CA.
        wrong_host: Issued by the trusted CA, valid only for ``wrong.example``.
        expired: Right names and CA, validity ended a day ago.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._ca = trustme.CA(organization_name="exportmon test CA")
        self._untrusted_ca = trustme.CA(organization_name="exportmon untrusted CA")

        self.ca_file = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self.ca_file.chmod(0o644)
        self.wrong_ca_file = self.directory / "untrusted-ca.pem"
        self._untrusted_ca.cert_pem.write_to_path(str(self.wrong_ca_file))
        self.wrong_ca_file.chmod(0o644)

        self.server = self.issue("server", *SERVER_NAMES)
        self.wrong_ca = self.issue("wrong-ca", *SERVER_NAMES, trusted=False)
        self.wrong_host = self.issue("wrong-host", WRONG_HOST_NAME)
        now = dt.datetime.now(dt.timezone.utc)
        self.expired = self.issue(
            "expired",
            *SERVER_NAMES,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )

    def issue(
        self,
        label: str,
        *hostnames: str,
        trusted: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ServerCert:
        """Issue another server certificate and write its files.

        Args:
            label: File name stem; must be unique within this CA's directory.
            hostnames: DNS names or IP addresses for subjectAltName.
            trusted: Sign with the trusted CA (default) or the untrusted one.
            not_before: Start of validity (trustme's default when ``None``).
            not_after: End of validity (trustme's default when ``None``).

        Returns:
            The written certificate files.
        """
        issuer = self._ca if trusted else self._untrusted_ca
        leaf = issuer.issue_cert(*hostnames, not_before=not_before, not_after=not_after)
        cert_file = self.directory / f"{label}-cert.pem"
        key_file = self.directory / f"{label}-key.pem"
        combined_file = self.directory / f"{label}-combined.pem"
        for index, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(cert_file), append=index > 0)
        leaf.private_key_pem.write_to_path(str(key_file))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(combined_file))
        for path in (cert_file, key_file, combined_file):
            # Dovecot's login processes run as nobody.
            path.chmod(0o644)
        return ServerCert(
            label=label,
            hostnames=tuple(hostnames),
            cert_file=cert_file,
            key_file=key_file,
            combined_file=combined_file,
        )

    def client_context(self) -> ssl.SSLContext:
        """Return a client :class:`ssl.SSLContext` that trusts only :attr:`ca_file`.

        Hostname checking stays on, so it accepts :attr:`server` but rejects
        :attr:`wrong_ca`, :attr:`wrong_host` and :attr:`expired`.
        """
        return ssl.create_default_context(cafile=str(self.ca_file))
