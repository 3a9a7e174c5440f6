"""`exportmon explain`: the verdict and its reason for each kind of mail, run as a user would."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

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


# --- a folder source ----------------------------------------------------------------


def test_folder_files_each_get_a_verdict(tmp_path):
    import os
    import time

    inbox = tmp_path / "outbox"
    inbox.mkdir()
    table = {"kind": "folder", "path": str(inbox), "patterns": ["*.txt", "*.csv"]}
    table.update(settle="30s", archive="")
    data = config_data(tmp_path / "state", table, ids=(1,), allow_hosts=())
    data["deliver"] = {"to": str(tmp_path / "delivered")}
    data["types"] = [
        {"name": "users", "header_has": ["EXTERNAL_PERSON_KEY", "USER_ID"]},
        {"name": "memberships", "name_pattern": "^memberships"},
    ]
    config = write_config(tmp_path / "monitors", data, "sis")

    def drop(name: str, data: bytes, age: float = 60.0) -> None:
        (inbox / name).write_bytes(data)
        moment = time.time() - age
        os.utime(inbox / name, (moment, moment))

    drop("memberships.txt", b"EXTERNAL_COURSE_KEY|EXTERNAL_PERSON_KEY|ROLE\nC1|P1|S\n")
    assert run_cli("-c", config, "run", "--once").code == 0  # taken, and left in place
    drop("users.txt", b"EXTERNAL_PERSON_KEY|USER_ID|FIRSTNAME\nP1|u1|Ann\n")
    drop("fresh.txt", b"EXTERNAL_PERSON_KEY|USER_ID\nP2|u2\n", age=0)
    drop("grades.csv", b"STUDENT\tGRADE\nP1\tA\n")
    drop("users.txt.part", b"EXTERNAL_PERSON_KEY|USER_ID\n")
    drop("notes.doc", b"x")
    verdicts = {Path(v["where"]).name: v for v in explained(config)}
    assert sorted(verdicts) == [
        "fresh.txt",
        "grades.csv",
        "memberships.txt",
        "notes.doc",
        "users.txt",
        "users.txt.part",
    ]
    users = verdicts["users.txt"]
    assert users["outcome"] == "take the file" and users["export_mail"]
    assert users["reason"] == "complete: taken as type users for export 1"
    steps = {s["check"]: s for s in users["steps"]}
    assert steps["type"]["detail"] == "types[0] users (header_has EXTERNAL_PERSON_KEY, USER_ID)"
    assert steps["pattern"]["detail"] == "matches *.txt"
    fresh = verdicts["fresh.txt"]
    assert fresh["outcome"] == "wait" and "settling" in fresh["reason"]
    fresh_steps = {s["check"]: s for s in fresh["steps"]}
    assert fresh_steps["type"] == {
        "check": "type",
        "passed": None,
        "detail": "told once the file is complete",
    }
    grades = verdicts["grades.csv"]
    assert grades["outcome"] == "leave alone" and not grades["export_mail"]
    assert "no [[types]] rule matches its name or header (TAB: STUDENT, GRADE)" in grades["reason"]
    done = verdicts["memberships.txt"]
    assert done["outcome"] == "done" and "already processed (mail #1 (kept))" in done["reason"]
    assert "types[1] memberships (name_pattern '^memberships')" in json.dumps(done["steps"])
    assert "partial" in verdicts["users.txt.part"]["reason"]
    assert "matches no pattern" in verdicts["notes.doc"]["reason"]

    # One file, given by path; one outside the folder, judged as if dropped there.
    outside = tmp_path / "users-copy.txt"
    outside.write_bytes((inbox / "users.txt").read_bytes())
    os.utime(outside, (time.time() - 60, time.time() - 60))
    (inside, copy) = explained(config, inbox / "users.txt", outside)
    assert inside["outcome"] == "take the file"
    assert copy["steps"][0] == {
        "check": "folder",
        "passed": False,
        "detail": f"not in {inbox}: a run does not see it there",
    }
    text = run_cli("-c", config, "explain")
    checks = [line for line in text.stdout.splitlines() if line.startswith("  ")]
    assert text.code == 0 and all(len(line) <= 80 for line in checks)  # paths as they are
    assert f"{inbox}/users.txt\n  take the file: complete" in text.stdout
