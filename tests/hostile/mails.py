"""Hostile mails: broken MIME, odd headers, encodings, huge sizes, forged senders."""

from __future__ import annotations

import base64
from email.utils import make_msgid

from fetchkit import export_mail

from .cases import Case, Scene

GOOD_HEADERS = (
    b"From: ITRP <noreply@itrp.com>\r\n"
    b"To: exports@example.com\r\n"
    b"Subject: Export finished - Scheduled export\r\n"
    b"Date: Mon, 23 Nov 2026 08:40:00 +0000\r\n"
)


def raw(headers: bytes, body: bytes = b"", *, export_id: bytes | None = b"777") -> bytes:
    """A mail made byte by byte: the usual headers, ``headers``, a blank line, ``body``."""
    message_id = make_msgid(domain="hostile.example").encode()
    head = GOOD_HEADERS + b"Message-ID: " + message_id + b"\r\n"
    if export_id is not None:
        head += b"X-ITRP-ExportID: " + export_id + b"\r\nX-ITRP-Export: tok-" + message_id[1:9]
        head += b"\r\n"
    return head + headers + b"\r\n" + body


def _csv_attachment_part(name: bytes, payload: bytes, boundary: bytes = b"b1") -> bytes:
    return (
        b"--" + boundary + b"\r\nContent-Type: text/csv\r\n"
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"\r\n"
    )


def _multipart_without_boundary(scene: Scene) -> None:
    scene.mail(raw(b"Content-Type: multipart/mixed\r\n", b"--x\r\n\r\nhttps://10.0.0.1/x.csv\r\n"))


def _unclosed_multipart(scene: Scene) -> None:
    body = _csv_attachment_part(b"5-2-x.csv", b"aWQsbmFtZQo=") + b"--b1\r\nContent-Type: text/pl"
    scene.mail(raw(b'Content-Type: multipart/mixed; boundary="b1"\r\n', body))


def _broken_base64(scene: Scene) -> None:
    body = _csv_attachment_part(b"5-2-x.csv", b"!!!not base64 at all===\x00\xff") + b"--b1--\r\n"
    scene.mail(raw(b'Content-Type: multipart/mixed; boundary="b1"\r\n', body))


def _deep_nesting(scene: Scene) -> None:
    depth = 200
    head = b"".join(
        b'--n%d\r\nContent-Type: multipart/mixed; boundary="n%d"\r\n\r\n' % (i, i + 1)
        for i in range(depth)
    )
    tail = b"".join(b"--n%d--\r\n" % i for i in reversed(range(depth + 1)))
    scene.mail(raw(b'Content-Type: multipart/mixed; boundary="n0"\r\n', head + tail))


def _binary_garbage(scene: Scene) -> None:
    scene.mail(bytes(range(256)) * 64 + b"\r\n\r\n\x00\x00")


def _empty_file(scene: Scene) -> None:
    scene.mail(b"")


def _headers_only(scene: Scene) -> None:
    scene.mail(raw(b"", b"")[:-2])


def _non_numeric_id(scene: Scene) -> None:
    scene.export("https://10.0.0.1/a.csv", export_id="777abc")


def _sql_in_id(scene: Scene) -> None:
    scene.export("https://10.0.0.1/a.csv", export_id="777'; DROP TABLE exports; --")


def _huge_id(scene: Scene) -> None:
    scene.export("https://10.0.0.1/a.csv", export_id="9" * 40)


def _missing_id(scene: Scene) -> None:
    scene.export("https://10.0.0.1/a.csv", export_id=None)


def _duplicate_id_headers(scene: Scene) -> None:
    scene.mail(raw(b"X-ITRP-ExportID: 778\r\n", b"https://10.0.0.1/a.csv\r\n"))


def _duplicate_from(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    scene.mail(raw(b"From: Evil <attacker@evil.example>\r\n", b"https://10.0.0.1/a.csv\r\n"))


def _duplicate_message_id(scene: Scene) -> None:
    # The same Message-ID as the good mail: taken once, the second copy is a duplicate.
    good = (scene.mails / "good.eml").read_bytes()
    scene.mail(good.replace(b"good-0001", b"copy-0001"), "zz-copy.eml")


def _huge_subject(scene: Scene) -> None:
    scene.mail(raw(b"Subject: " + b"S" * 2_000_000 + b"\r\n", b"https://10.0.0.1/a.csv\r\n"))


def _many_headers(scene: Scene) -> None:
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 50) for i in range(50_000))
    scene.mail(raw(headers, b"https://10.0.0.1/a.csv\r\n"))


def _long_folded_header(scene: Scene) -> None:
    folded = b"X-Long: start" + b"\r\n\tcontinued" * 200_000 + b"\r\n"
    scene.mail(raw(folded, b"https://10.0.0.1/a.csv\r\n"))


def _body_50mb(scene: Scene) -> None:
    scene.allow_local()
    url = scene.web.add("/exports/5-3-big-body.csv", b"id\n1\n")
    text = "x" * 70 + "\n"
    body = f"The export is ready: {url}\n" + text * (50_000_000 // len(text))
    scene.export(text=body, token="big-body")


def _mail_over_the_limit(scene: Scene) -> None:
    body = b"A" * 76 + b"\r\n"
    scene.mail(raw(b"", b"https://10.0.0.1/a.csv\r\n" + body * (70_000_000 // len(body))))


def _unknown_charset(scene: Scene) -> None:
    scene.allow_local()
    url = scene.web.add("/exports/5-4-charset.csv", b"id\n1\n")
    body = f"Download: {url}\r\n".encode()
    scene.mail(raw(b"Content-Type: text/plain; charset=x-no-such-charset\r\n", body))


def _lying_charset(scene: Scene) -> None:
    scene.allow_local()
    url = scene.web.add("/exports/5-5-utf16.csv", b"id\n1\n")
    body = f"Download: {url}\r\n".encode()
    scene.mail(raw(b"Content-Type: text/plain; charset=utf-16\r\n", body))


def _raw_8bit_headers(scene: Scene) -> None:
    scene.allow_local()
    url = scene.web.add("/exports/5-6-8bit.csv", b"id\n1\n")
    headers = b"X-Note: \xff\xfe\xe4\xf6\xfc caf\xc3\xa9 \x80\x81\r\n"
    scene.mail(
        raw(headers, f"Download: {url}\r\n".encode()).replace(b"Export finished", b"\xe9t\xe9")
    )


def _encoded_word_id(scene: Scene) -> None:
    # An encoded word is not a number: the header is not decoded into one.
    scene.mail(raw(b"", b"https://10.0.0.1/a.csv\r\n", export_id=b"=?utf-8?b?Nzc3?="))


def _encoded_word_sender(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    raw_mail = export_mail(
        "https://10.0.0.1/a.csv", sender="placeholder@placeholder.example", token="ew-sender"
    )
    raw_mail = raw_mail.replace(
        b"From: placeholder@placeholder.example",
        b"From: =?utf-8?q?noreply=40itrp=2Ecom?= <attacker@evil.example>",
    )
    scene.mail(raw_mail)


def _encoded_word_address(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    headers = b"From: =?utf-8?b?" + base64.b64encode(b"attacker@evil.example") + b"?=\r\n"
    scene.mail(raw(headers, b"https://10.0.0.1/a.csv\r\n").replace(b"From: ITRP", b"X-Was: "))


def _encoded_word_newlines(scene: Scene) -> None:
    subject = b"=?utf-8?q?x=0D=0AERROR_forged_log_line=1B[31m_red=07=00?="
    headers = b"Subject: " + subject + b"\r\n"
    scene.mail(raw(headers, b"no link here\r\n").replace(b"Subject: Export finished", b"X-S: "))

    def no_forged_line(result):
        assert not [line for line in result.stderr.splitlines() if line.startswith("ERROR forged")]

    scene.check(no_forged_line)


def _encoded_word_attachment_name(scene: Scene) -> None:
    name = b"=?utf-8?q?=2E=2E=2F=2E=2E=2Fhostile-ew=2Ecsv?="
    body = _csv_attachment_part(name, base64.b64encode(b"id\n1\n")) + b"--b1--\r\n"
    scene.mail(raw(b'Content-Type: multipart/mixed; boundary="b1"\r\n', body))
    scene.must_not_exist(scene.base / "hostile-ew.csv", scene.root / "hostile-ew.csv")


def _forged_sender(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["noreply@itrp.com"]
    scene.export("https://10.0.0.1/a.csv", sender="ITRP <noreply@itrp.com.evil.example>")


def _forged_display_name(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    scene.export("https://10.0.0.1/a.csv", sender='"noreply@itrp.com" <x@evil.example>')


def _forged_second_address(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    scene.export("https://10.0.0.1/a.csv", sender="noreply@itrp.com, attacker@evil.example")


def _no_sender(scene: Scene) -> None:
    scene.table("source")["allowed_senders"] = ["@itrp.com"]
    scene.mail(raw(b"", b"https://10.0.0.1/a.csv\r\n").replace(b"From: ITRP", b"X-From: "))


def _attachment_name_slip(scene: Scene) -> None:
    scene.attach("../../hostile-slip.csv", b"id\n1\n")
    scene.must_not_exist(scene.base / "hostile-slip.csv", scene.root / "hostile-slip.csv")


def _attachment_name_nul(scene: Scene) -> None:
    body = _csv_attachment_part(b"evil\x00.sh\x00.csv", base64.b64encode(b"id\n1\n")) + b"--b1--"
    scene.mail(raw(b'Content-Type: multipart/mixed; boundary="b1"\r\n', body))


def _attachment_name_long(scene: Scene) -> None:
    scene.attach("5-7-" + "n" * 1000 + ".csv", b"id\n1\n")

    def short_names(result):
        assert all(len(p.name.encode()) <= 255 for p in scene.delivered.iterdir())

    scene.check(short_names)


def _attachment_names_by_case(scene: Scene) -> None:
    scene.attach("5-8-People.csv", b"id\n1\n")
    scene.attach("5-8-people.csv", b"id\n2\n")

    def both_kept(result):
        assert (scene.delivered / "5-8-People.csv").read_bytes() == b"id\n1\n"
        assert (scene.delivered / "5-8-people.csv").read_bytes() == b"id\n2\n"

    scene.check(both_kept)


def _attachment_only_dots(scene: Scene) -> None:
    # "...csv" is no name at all once the leading dots (never hidden files) are dropped.
    scene.attach("...csv", b"id\n1\n")


CASES = [
    Case(
        "mime-multipart-without-boundary",
        "mail",
        _multipart_without_boundary,
        message=r"neither a download link",
        outcome="failed-export",
    ),
    Case("mime-unclosed-multipart", "mail", _unclosed_multipart, code=0, outcome="delivered"),
    Case(
        "mime-broken-base64",
        "mail",
        _broken_base64,
        code=0,
        outcome="delivered",
        message=r"cannot count the rows .*not valid utf-8-sig",
    ),
    Case("mime-200-nested-multiparts", "mail", _deep_nesting, message=r"neither a download link"),
    Case("mime-binary-garbage", "mail", _binary_garbage, code=0, outcome="ignored"),
    Case("mime-empty-file", "mail", _empty_file, code=0, outcome="ignored"),
    Case("mime-headers-only", "mail", _headers_only, message=r"neither a download link"),
    Case(
        "id-non-numeric",
        "mail",
        _non_numeric_id,
        message=r"X-ITRP-ExportID is not a number",
        outcome="failed-mail",
    ),
    Case(
        "id-sql-injection",
        "mail",
        _sql_in_id,
        message=r"X-ITRP-ExportID is not a number",
        outcome="failed-mail",
    ),
    Case(
        "id-40-digits",
        "mail",
        _huge_id,
        message=r"X-ITRP-ExportID is not a number",
        outcome="failed-mail",
    ),
    Case("id-missing", "mail", _missing_id, code=0, outcome="ignored"),
    Case(
        "id-duplicate-headers",
        "mail",
        _duplicate_id_headers,
        message=r"X-ITRP-ExportID.*(twice|more than once)",
        outcome="failed-mail",
    ),
    Case(
        "from-duplicate-headers",
        "mail",
        _duplicate_from,
        code=0,
        outcome="ignored",
        message=r"not in source\.allowed_senders",
    ),
    Case("message-id-duplicate", "mail", _duplicate_message_id, code=0, outcome="ignored"),
    Case("header-2mb-subject", "mail", _huge_subject, message=r"10\.0\.0\.1: a private address"),
    Case("header-50000-headers", "mail", _many_headers, message=r"10\.0\.0\.1: a private address"),
    Case(
        "header-folded-200000-lines",
        "mail",
        _long_folded_header,
        message=r"10\.0\.0\.1: a private address",
    ),
    Case("body-50mb", "mail", _body_50mb, code=0, outcome="delivered"),
    Case(
        "body-over-64mib",
        "mail",
        _mail_over_the_limit,
        message=r"more than the 67\.1 MB",
        outcome="failed-mail",
    ),
    Case("charset-unknown", "mail", _unknown_charset, code=0, outcome="delivered"),
    Case("charset-lying-utf16", "mail", _lying_charset, message=r"neither a download link"),
    Case("charset-raw-8bit-headers", "mail", _raw_8bit_headers, code=0, outcome="delivered"),
    Case(
        "encoded-word-export-id",
        "mail",
        _encoded_word_id,
        message=r"10\.0\.0\.1: a private address",
    ),
    Case(
        "encoded-word-sender-name",
        "mail",
        _encoded_word_sender,
        code=0,
        outcome="ignored",
        message=r"attacker@evil\.example is not in source\.allowed_senders",
    ),
    Case("encoded-word-sender-address", "mail", _encoded_word_address, code=0, outcome="ignored"),
    Case(
        "encoded-word-newlines-and-escapes",
        "mail",
        _encoded_word_newlines,
        message=r"neither a download link",
    ),
    Case(
        "encoded-word-attachment-slip",
        "mail",
        _encoded_word_attachment_name,
        code=0,
        outcome="delivered",
    ),
    Case(
        "sender-forged-domain",
        "mail",
        _forged_sender,
        code=0,
        outcome="ignored",
        message=r"noreply@itrp\.com\.evil\.example is not in source\.allowed_senders",
    ),
    Case(
        "sender-forged-display-name",
        "mail",
        _forged_display_name,
        code=0,
        outcome="ignored",
        message=r"x@evil\.example is not in source\.allowed_senders",
    ),
    Case(
        "sender-forged-second-address",
        "mail",
        _forged_second_address,
        code=0,
        outcome="ignored",
        message=r"attacker@evil\.example is not in source\.allowed_senders",
    ),
    Case("sender-missing", "mail", _no_sender, code=0, outcome="ignored"),
    Case("attachment-name-slip", "mail", _attachment_name_slip, code=0, outcome="delivered"),
    Case("attachment-name-nul", "mail", _attachment_name_nul, code=0, outcome="delivered"),
    Case("attachment-name-1000-chars", "mail", _attachment_name_long, code=0, outcome="delivered"),
    Case(
        "attachment-names-differ-by-case",
        "mail",
        _attachment_names_by_case,
        code=0,
        outcome="delivered",
    ),
    Case(
        "attachment-name-only-dots",
        "mail",
        _attachment_only_dots,
        message=r"neither a download link",
    ),
]
