"""Recognising export mails: the gem's fixtures, attachments, forwards, recognisers, screening."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from pathlib import Path

import pytest
from fetchkit import export_mail, plain_mail
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exportmon.config.load import parse as parse_config
from exportmon.mail.message import find_link, parse, recognise, screen

GEM_LINK = (
    "https://itrp.amazonaws.com/exports/20130911/wdc/20130911-195545-affected_slas.csv"
    "?AWSAccessKeyId=AKIA&Signature=du%2B23ZUsrLng%3D&Expires=1379102146"
)
GEM_TOKEN = "0fad4fc0fd4a0130ad2a12313b0e50759969ab71899d2bb1d3e3d8f66e6e5133"


def monitor(**data):
    data.setdefault("ids", [777, 2])
    data.setdefault("source", {"kind": "dir", "path": "/tmp"})
    return parse_config(data, path=Path("/tmp/777.toml"), name="777")


# --- the gem's fixture mails (EXPECTED.md) ------------------------------------------


def test_the_gem_export_mail(gem_fixtures):
    result = recognise(parse((gem_fixtures / "export_finished_1.eml").read_bytes()), monitor())
    assert result.skip is None and result.problem is None
    assert result.export_id == 2 and result.token == GEM_TOKEN
    (export,) = result.exports
    assert export.kind == "link"
    assert export.link == GEM_LINK
    assert export.file_name == "20130911-195545-affected_slas.csv"
    assert result.info.message_id == "<5230cac2b5b24_3c874544@server.itrp.com>"
    assert result.info.senders == ("noreply@itrp.com",)


def test_the_gem_on_premise_mail(gem_fixtures):
    result = recognise(parse((gem_fixtures / "on_premise_export.eml").read_bytes()), monitor())
    (export,) = result.exports
    assert export.link == (
        "https://itrp.amazonaws.com/exports/20130911/wdc/20130911-195545-affected_slas.csv"
    )
    assert export.file_name == "20130911-195545-affected_slas.csv"
    assert result.export_id == 2 and result.token == GEM_TOKEN


def test_the_gem_non_export_mail(gem_fixtures):
    result = recognise(parse((gem_fixtures / "non_export.eml").read_bytes()), monitor())
    assert result.exports == [] and result.export_id is None and result.token is None
    assert result.skip == "not an export mail"
    assert result.info.subject.startswith("Änderung #1687")


def test_an_unmonitored_export_id_is_left_alone(gem_fixtures):
    raw = (gem_fixtures / "export_finished_1.eml").read_bytes()
    result = recognise(parse(raw), monitor(ids=[777]))
    assert result.exports == [] and result.unmonitored == 2
    assert result.skip == "export id 2 is not monitored"


# --- links -------------------------------------------------------------------------


def test_the_link_comes_from_the_html_part_when_the_text_has_none():
    html = (
        '<p>Ready: <a href="https://files.example.com/exports/777/a.zip?x=1&amp;y=2">'
        "download</a></p>"
    )
    raw = export_mail(text="Your export is ready.\n", html=html)
    (export,) = recognise(parse(raw), monitor()).exports
    assert export.link == "https://files.example.com/exports/777/a.zip?x=1&y=2"
    assert export.file_name == "a.zip"


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("Get it here: https://x.example/a.zip.", "https://x.example/a.zip"),
        ("(see https://x.example/a.zip)", "https://x.example/a.zip"),
        ("<https://x.example/a.zip>", "https://x.example/a.zip"),
        ("HTTPS://X.example/b_(1).csv now", "HTTPS://X.example/b_(1).csv"),
        ("no link at all", None),
        ("ftp://x.example/a.zip only", None),
    ],
)
def test_link_boundaries(text, link):
    message = EmailMessage()
    message.set_content(text)
    assert find_link(parse(message.as_bytes())) == link


def test_an_export_mail_without_link_or_attachment_is_a_problem():
    result = recognise(parse(export_mail(text="Something went wrong.\n")), monitor())
    assert result.export_id == 777 and result.exports == []
    assert "no download link" in result.problem


def test_a_non_numeric_export_id_is_a_problem():
    result = recognise(parse(export_mail("https://x/a.zip", export_id="seven")), monitor())
    assert result.problem == "header X-ITRP-ExportID is not a number"


# --- attachments ---------------------------------------------------------------------


def test_attached_exports_are_decoded_with_their_rfc2231_names():
    raw = export_mail(
        text="Attached.\n",
        attachments=[("Übersicht-people.csv", b"id,name\n1,J\xc3\xb6rg\n"), ("b.zip", b"PK\x03")],
    )
    assert b"filename*=utf-8''%C3%9Cbersicht-people.csv" in raw
    result = recognise(parse(raw), monitor())
    assert [(e.kind, e.file_name) for e in result.exports] == [
        ("attachment", "Übersicht-people.csv"),
        ("attachment", "b.zip"),
    ]
    assert result.exports[0].attachment.content == b"id,name\n1,J\xc3\xb6rg\n"
    assert result.exports[1].attachment.content == b"PK\x03"


def test_attachment_names_in_encoded_words_and_any_transfer_encoding():
    payload = b"a,b\r\n1,2\r\n"
    uu = base64.b64encode(payload).decode()
    raw = (
        "From: ITRP <noreply@itrp.com>\r\nSubject: Export\r\nX-ITRP-ExportID: 777\r\n"
        "X-ITRP-Export: tok\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n"
        "--b\r\nContent-Type: text/csv\r\n"
        'Content-Disposition: attachment; filename="=?UTF-8?B?w6R4LmNzdg==?="\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{uu}\r\n"
        "--b\r\nContent-Type: text/csv\r\n"
        'Content-Disposition: attachment; filename="qp.csv"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\na,b=0D=0A1,2=0D=0A\r\n"
        "--b\r\nContent-Type: text/csv\r\n"
        'Content-Disposition: attachment; filename="../../evil.csv"\r\n\r\nx\r\n'
        "--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="manual.pdf"\r\n\r\nx\r\n'
        "--b--\r\n"
    ).encode()
    result = recognise(parse(raw), monitor())
    found = {e.file_name: e.attachment.content for e in result.exports}
    assert found["äx.csv"] == payload
    assert found["qp.csv"] == payload
    assert "evil.csv" in found and set(found) == {"äx.csv", "qp.csv", "evil.csv"}


# --- forwarded mails and other systems -----------------------------------------------


def forwarded(inner: bytes) -> bytes:
    outer = EmailMessage()
    outer["From"] = "Colleague <bob@example.com>"
    outer["Subject"] = "Fwd: Export finished"
    outer.set_content("See the attached mail.\n")
    outer.add_attachment(parse(inner), filename="export.eml")
    return outer.as_bytes()


def test_a_forwarded_export_mail_counts_only_when_accepted():
    raw = forwarded(export_mail("https://files.example.com/a.zip", token="tok-fwd"))
    assert recognise(parse(raw), monitor()).skip == "not an export mail"
    source = {"kind": "dir", "path": "/tmp", "accept_forwarded": True}
    result = recognise(parse(raw), monitor(source=source))
    assert result.forwarded and result.token == "tok-fwd"
    assert [e.link for e in result.exports] == ["https://files.example.com/a.zip"]


def test_a_configured_recognizer_for_another_system():
    config = monitor(
        ids=[41],
        recognizers=[
            {
                "name": "acme",
                "subject_pattern": r"Export (?P<id>\d+) is ready",
                "token_header": "X-Acme-Token",
                "link_pattern": r"https://files\.acme\.example/\S+",
            }
        ],
    )
    message = EmailMessage()
    message["From"] = "ACME <robot@acme.example>"
    message["Subject"] = "Export 41 is ready"
    message["X-Acme-Token"] = "acme-9"
    message.set_content(
        "Logo: https://cdn.acme.example/logo.png\nFile: https://files.acme.example/d/41.csv\n"
    )
    result = recognise(parse(message.as_bytes()), config)
    assert result.recognizer == "acme" and result.export_id == 41 and result.token == "acme-9"
    assert [e.link for e in result.exports] == ["https://files.acme.example/d/41.csv"]
    del message["Subject"]
    message["Subject"] = "Export 42 is ready"
    assert recognise(parse(message.as_bytes()), config).unmonitored == 42
    del message["Subject"]
    message["Subject"] = "Newsletter"
    assert recognise(parse(message.as_bytes()), config).skip == "not an export mail"


# --- screening -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Auto-Submitted": "auto-replied"}, "an automatic reply (Auto-Submitted: auto-replied)"),
        ({"Auto-Submitted": "auto-notified; owner=x"}, "Auto-Submitted: auto-notified"),
        ({"X-Autoreply": "yes"}, "an automatic reply"),
        ({"X-Exportmon-Alert": "777"}, "an exportmon alert mail"),
    ],
)
def test_automatic_replies_and_alerts_are_never_processed(headers, reason):
    raw = export_mail("https://x.example/a.zip", headers=headers, auto_submitted=None)
    result = recognise(parse(raw), monitor())
    assert result.exports == [] and reason in result.skip


def test_itrp_auto_generated_mails_are_processed():
    raw = export_mail("https://x.example/a.zip", auto_submitted="auto-generated")
    assert recognise(parse(raw), monitor()).exports


def test_bounces_and_reports_are_never_processed():
    bounce = export_mail("https://x.example/a.zip", sender="Mail Delivery <MAILER-DAEMON@x.org>")
    assert recognise(parse(bounce), monitor()).skip == "a bounce"
    report = (
        b"From: postmaster@x.org\r\nSubject: Undelivered\r\nX-ITRP-ExportID: 777\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=z\r\n\r\n--z--\r\n"
    )
    assert recognise(parse(report), monitor()).skip == "a delivery or read report"


def test_mails_from_the_monitors_own_alert_address_are_never_processed():
    config = monitor(alerts={"from": "Exportmon <alerts@example.com>", "command": "true"})
    raw = export_mail("https://x.example/a.zip", sender="alerts@example.com")
    assert "alert address" in recognise(parse(raw), config).skip


def test_allowed_senders():
    config = monitor(source={"kind": "dir", "path": "/tmp", "allowed_senders": ["@itrp.com"]})
    good = export_mail("https://x.example/a.zip")
    assert recognise(parse(good), config).exports
    bad = export_mail("https://x.example/a.zip", sender="ITRP <noreply@itrp.com.evil.example>")
    assert "not in source.allowed_senders" in recognise(parse(bad), config).skip
    two = export_mail("https://x.example/a.zip", sender="noreply@itrp.com, x@evil.example")
    assert "x@evil.example" in recognise(parse(two), config).skip
    exact = monitor(source={"kind": "dir", "path": "/tmp", "allowed_senders": ["NoReply@ITRP.com"]})
    assert recognise(parse(good), exact).exports


def test_screening_works_on_the_header_block_alone():
    raw = export_mail("https://x.example/a.zip", auto_submitted="auto-replied")
    head = raw.split(b"\n\n", 1)[0] + b"\n\n"
    assert "automatic reply" in screen(parse(head), monitor())
    assert screen(parse(plain_mail()), monitor()) is None


# --- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"From: =?utf-8?q?broken\r\nSubject: =?x-unknown?b?AAAA?=\r\nX-ITRP-ExportID: 777\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=\r\nX-ITRP-ExportID: 777\r\n\r\nbody",
        b"Content-Type: text/plain; charset=no-such-charset\r\nX-ITRP-ExportID: 777\r\n\r\n"
        b"https://x.example/a.zip",
        b"Date: 99 Foo 99999 99:99\r\nMessage-ID: <<<\r\n\r\n",
        b"From: " + b"a" * 100_000 + b"\r\n\r\n",
    ],
)
def test_malformed_mails_never_raise(raw):
    result = recognise(parse(raw), monitor())
    assert result.skip or result.problem or result.exports


@given(st.binary(max_size=2000))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_arbitrary_bytes_never_raise(raw):
    recognise(parse(b"X-ITRP-ExportID: 777\r\n" + raw), monitor())
