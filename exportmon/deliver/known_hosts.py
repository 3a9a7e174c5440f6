"""Reading an OpenSSH ``known_hosts`` file: which keys a server may show, and which it must not.

The file is read as ``ssh`` reads it (``sshd(8)``, section SSH_KNOWN_HOSTS FILE FORMAT):

* a line is ``[marker] hostpatterns keytype base64-key [comment]``; empty lines and
  ``#`` comments are skipped, and so is a line that cannot be read (ssh does the
  same), so one bad line never hides the others;
* ``hostpatterns`` is a comma-separated list of names, ``*`` and ``?`` wildcards,
  ``[host]:port`` for a port other than 22, hashed names (``|1|salt|hash``, what
  ``ssh-keyscan -H`` and ``HashKnownHosts`` write) and negations (``!pattern``: a
  line whose negated pattern matches does not apply, whatever else matches);
  names are compared without regard to case;
* ``@revoked`` marks a key that must be refused for the hosts it names, even where
  another line lists it as valid;
* ``@cert-authority`` lines are for host certificates, which exportmon does not
  ask for: they are skipped.

Keys are compared as their wire-format blobs (the base64 field decoded), so an RSA
key matches whatever signature algorithm (``rsa-sha2-512``) the server uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


@dataclass
class KnownKeys:
    """What a known_hosts file says of one server."""

    #: Valid keys by key type (``ssh-ed25519``, ``ssh-rsa``, ``ecdsa-sha2-nistp256``),
    #: as blobs, in file order.
    valid: dict[str, list[bytes]] = field(default_factory=dict)
    #: Keys marked ``@revoked`` for this server.
    revoked: set[bytes] = field(default_factory=set)

    def is_revoked(self, blob: bytes) -> bool:
        return blob in self.revoked

    def accepts(self, blob: bytes) -> bool:
        """Whether ``blob`` is a valid key of this server (and not revoked)."""
        return not self.is_revoked(blob) and any(blob in keys for keys in self.valid.values())


def host_name(host: str, port: int) -> str:
    """The server's name in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def lookup(path: Path, host: str, port: int = 22) -> KnownKeys:
    """The keys ``path`` lists for ``host`` at ``port``; raises :class:`OSError` and
    :class:`UnicodeDecodeError` when the file cannot be read as text."""
    name = host_name(host, port).lower()
    found = KnownKeys()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            entry = _entry(line)
            if entry is None:
                continue
            marker, patterns, key_type, blob = entry
            if marker == CERT_AUTHORITY or not matches(patterns, name):
                continue
            if marker == REVOKED:
                found.revoked.add(blob)
            else:
                found.valid.setdefault(key_type, []).append(blob)
    return found


def _entry(line: str) -> tuple[str | None, str, str, bytes] | None:
    """``(marker, hostpatterns, keytype, blob)`` of a line, or ``None`` to skip it."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0].lower(), fields[1:]
        if marker not in (REVOKED, CERT_AUTHORITY):
            return None
    if len(fields) < 3:
        return None
    patterns, key_type, encoded = fields[:3]
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if _blob_type(blob) != key_type:
        return None  # a damaged line, or a type that does not fit its key
    return marker, patterns, key_type, blob


def _blob_type(blob: bytes) -> str | None:
    """The key type a key blob starts with (``string keytype``)."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def matches(patterns: str, name: str) -> bool:
    """Whether the comma-separated ``patterns`` of a line apply to ``name`` (lower case)."""
    hit = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if _matches_one(pattern, name):
            if negated:
                return False
            hit = True
    return hit


def _matches_one(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        return _hashed_matches(pattern, name)
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern.lower()
    )
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


def _hashed_matches(pattern: str, name: str) -> bool:
    """``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``."""
    try:
        _, _, salt, digest = pattern.split("|")
        key = base64.b64decode(salt, validate=True)
        expected = base64.b64decode(digest, validate=True)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hmac.new(key, name.encode(), hashlib.sha1).digest(), expected)


def fingerprint(blob: bytes) -> str:
    """``SHA256:<base64>`` of a key blob, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
