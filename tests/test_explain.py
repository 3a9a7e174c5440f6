"""`exportmon explain`: the verdict and its reason for each kind of mail, run as a user would."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage

import pytest
from fetchkit import config_data, export_mail, plain_mail, write_config

from cli import run_cli


@pytest.fixture
def config(tmp_path):
    def make(**source):
        table = {"kind": "dir", "path": str(tmp_path / "mails"), **source}
        data = config_data(tmp_path / "state", table, ids=(2, 777), allow_hosts=())
        return write_config(tmp_path / "monitors", data)

    return make


def explained(config_path, *mails, env=None) -> list[dict]:
    result = run_cli("-c", config_path, "explain", "--json", *mails, env=env)
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_gem_mails(config, gem_fixtures, tmp_path):
    fresh = tmp_path / "fresh.eml"
    fresh.write_bytes(
        (gem_fixtures / "export_finished_1.eml")
        .read_bytes()
        .replace(b"Expires=1379102146", b"Expires=4102444800")
        .replace(b"itrp.amazonaws.com", b"93.184.216.34")  # a public address, not resolved
    )
    expired, on_premise, newsletter, good = explained(
        config(),
        gem_fixtures / "export_finished_1.eml",
        gem_fixtures / "on_premise_export.eml",
        gem_fixtures / "non_export.eml",
        fresh,
    )
    assert expired["export_mail"] and expired["outcome"] == "fail"
    assert "expired on 2013-09-13" in expired["reason"]
    assert expired["export_id"] == 2
    assert on_premise["export_mail"] and on_premise["export_id"] == 2
    assert not newsletter["export_mail"] and newsletter["outcome"] == "leave alone"
    assert "no X-ITRP-ExportID header" in json.dumps(newsletter["steps"])
    assert good["outcome"] == "download" and good["files"][0]["file"].endswith(".csv")
    assert "20130911-195545-affected_slas.csv" in good["reason"]


def test_an_export_id_not_in_ids(config, tmp_path):
    mail = tmp_path / "m.eml"
    mail.write_bytes(export_mail("https://93.184.216.34/e/x.csv", export_id=5))
    (verdict,) = explained(config(), mail)
    assert not verdict["export_mail"]
    assert verdict["reason"].startswith("export id 5 is not monitored")
    assert "add it to ids" in verdict["reason"]


def test_a_link_to_a_private_address_is_refused_before_the_first_byte(config, tmp_path):
    mail = tmp_path / "m.eml"
    mail.write_bytes(export_mail("https://10.0.0.1/e/x.csv"))
    (verdict,) = explained(config(), mail)
    assert verdict["outcome"] == "fail" and "a private address" in verdict["reason"]
    assert "allow_hosts" in verdict["reason"]


def forwarded(inner: bytes) -> bytes:
    outer = EmailMessage()
    outer["From"] = "colleague@example.com"
    outer["To"] = "exports@example.com"
    outer["Subject"] = "Fwd: Export finished"
    outer.set_content("see attached")
    outer.add_attachment(email.message_from_bytes(inner, policy=email.policy.default))
    return outer.as_bytes()


def test_a_forwarded_mail_with_and_without_accept_forwarded(config, tmp_path):
    mail = tmp_path / "fwd.eml"
    mail.write_bytes(forwarded(export_mail("https://93.184.216.34/e/f.csv")))
    (refused,) = explained(config(), mail)
    assert not refused["export_mail"] and "accept_forwarded" in refused["reason"]
    (taken,) = explained(config(accept_forwarded=True), mail)
    assert taken["export_mail"] and taken["outcome"] == "download"


def test_an_attachment_export_and_a_sender_not_allowed(config, tmp_path):
    message = EmailMessage()
    message["From"] = "ITRP <noreply@itrp.com>"
    message["Subject"] = "Export finished"
    message["X-ITRP-ExportID"] = "777"
    message.set_content("attached")
    message.add_attachment(b"id\n1\n", maintype="text", subtype="csv", filename="people.csv")
    mail = tmp_path / "a.eml"
    mail.write_bytes(message.as_bytes())
    (verdict,) = explained(config(), mail)
    assert verdict["outcome"] == "take the attachment" and "people.csv" in verdict["reason"]
    (screened,) = explained(config(allowed_senders=["@example.com"]), mail)
    assert "not in source.allowed_senders" in screened["reason"]


def test_the_text_output_fits_and_escapes_sender_text(config, tmp_path):
    raw = plain_mail().replace(b"Subject: ", b"Subject: \x1b]0;pwned\x07 ", 1)
    mail = tmp_path / "p.eml"
    mail.write_bytes(raw)
    result = run_cli("-c", config(), "explain", "--headers", mail)
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "leave alone" in result.stdout and "Subject:" in result.stdout


def test_a_missing_file_is_one_line(config, tmp_path):
    result = run_cli("-c", config(), "explain", tmp_path / "nope.eml")
    assert result.code == 2 and "cannot read" in result.stderr


def test_the_mailbox_new_mails_and_those_left_alone(config, tmp_path):
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "a.eml").write_bytes(export_mail("https://93.184.216.34/e/a.csv", export_id=5))
    (mails / "b.eml").write_bytes(export_mail("https://93.184.216.34/e/b.csv", token="t-b"))
    path = config()
    verdicts = explained(path)
    assert sorted(v["outcome"] for v in verdicts) == ["download", "leave alone"]
    assert any("export id 5 is not monitored" in v["reason"] for v in verdicts)
    assert list((tmp_path / "state").glob("downloads/**/*.csv")) == []
