"""Reading known_hosts as ssh does (exportmon/deliver/known_hosts.py): names, ports,
wildcards, negations, hashed names, @revoked and @cert-authority lines, bad lines.
Files come from the real ssh-keygen and ssh-keyscan in test_sftp.py; these are
written here so each rule has its own line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from exportmon.deliver.known_hosts import fingerprint, lookup, matches


def blob(kind: str, body: bytes) -> bytes:
    return struct.pack(">I", len(kind)) + kind.encode() + body


ED = blob("ssh-ed25519", b"\x00\x00\x00\x20" + b"e" * 32)
OTHER = blob("ssh-ed25519", b"\x00\x00\x00\x20" + b"o" * 32)
RSA = blob("ssh-rsa", b"\x00\x00\x00\x01\x03" + b"r" * 40)


def line(patterns: str, key: bytes, marker: str = "") -> str:
    kind = key[4 : 4 + struct.unpack(">I", key[:4])[0]].decode()
    text = f"{patterns} {kind} {base64.b64encode(key).decode()} a comment\n"
    return f"{marker} {text}" if marker else text


def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        ("sftp.example.com", "sftp.example.com", True),
        ("SFTP.Example.COM", "sftp.example.com", True),
        ("a.example.com,sftp.example.com", "sftp.example.com", True),
        ("*.example.com", "sftp.example.com", True),
        ("*.example.com", "example.com", False),
        ("sftp?.example.com", "sftp1.example.com", True),
        ("*.example.com,!sftp.example.com", "sftp.example.com", False),
        ("!sftp.example.com", "other.example.com", False),  # a negation alone matches nothing
        ("[sftp.example.com]:2222", "[sftp.example.com]:2222", True),
        ("[sftp.example.com]:*", "[sftp.example.com]:2222", True),
        ("sftp.example.com", "[sftp.example.com]:2222", False),
        ("[10.0.0.?]:22??", "[10.0.0.7]:2222", True),
        ("[10.0.0.?]:22?", "[10.0.0.7]:2222", False),
        (hashed("sftp.example.com"), "sftp.example.com", True),
        (hashed("[sftp.example.com]:2222"), "[sftp.example.com]:2222", True),
        (hashed("other.example.com"), "sftp.example.com", False),
        ("|1|not base64|x", "sftp.example.com", False),
    ],
)
def test_host_patterns(patterns, name, expected):
    assert matches(patterns, name) is expected


def test_the_keys_of_one_server(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n\n"
        + line("other.example.com", OTHER)
        + line("*.example.com", ED)
        + line("sftp.example.com", RSA)
        + line("*", OTHER, "@cert-authority")
        + "sftp.example.com ssh-ed25519 not-base64\n"
        + "sftp.example.com ssh-rsa " + base64.b64encode(ED).decode() + "\n"  # type mismatch
        + "@unknown-marker sftp.example.com ssh-ed25519 " + base64.b64encode(OTHER).decode() + "\n"
        + "too few\n"
    )  # fmt: skip
    known = lookup(path, "sftp.example.com")
    assert known.valid == {"ssh-ed25519": [ED], "ssh-rsa": [RSA]}
    assert known.accepts(ED) and known.accepts(RSA) and not known.accepts(OTHER)
    assert lookup(path, "sftp.example.com", 2222).valid == {}


def test_a_revoked_key_is_refused_even_where_another_line_lists_it(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(line("sftp.example.com", ED) + line("*", ED, "@revoked"))
    known = lookup(path, "sftp.example.com")
    assert known.is_revoked(ED) and not known.accepts(ED)


def test_the_fingerprint_is_sha256_of_the_blob():
    expected = base64.b64encode(hashlib.sha256(ED).digest()).decode().rstrip("=")
    assert fingerprint(ED) == f"SHA256:{expected}"


def test_a_file_that_is_no_text_is_an_error(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UnicodeDecodeError):
        lookup(path, "h")
