"""HTTPS destinations: uploads (raw, multipart, PUT, auth, headers, redirects, errors),
references, status conditions, and status tracking against a local Blackboard Learn
SIS endpoint — to done, warned, failed and timed out, across runs and restarts, each
file POSTed exactly once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from fetchkit import export_mail, write_config
from gem_output import GEM_ZIP, NAMES
from stress.crash import CrashWorld, Figures, crash_loop
from watching import Watcher, wait_for

from cli import run_cli
from exportmon.actions.deliver import deliver_export
from exportmon.actions.status_tracking import counts_text, processing_status, waiting_summary
from exportmon.actions.unzip import unpack_export
from exportmon.config.load import load_monitor
from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.deliver import Outgoing
from exportmon.deliver.conditions import (
    AnswerError,
    ConditionError,
    MissingField,
    parse_answer,
    parse_condition,
)
from exportmon.deliver.https import extract_reference, idempotency_key
from exportmon.deliver.kinds import open_destination
from exportmon.errors import ConfigError, DeliveryError
from exportmon.ledger import Ledger
from servers.blackboard import BASE, BlackboardServer

BLACKBOARD_XML = b"""<dataSetStatus>
    <completedCount>5</completedCount>
    <dataIntegrationId type="blackboard.platform">_123_1</dataIntegrationId>
    <dataSetUid>afc3d6e84df84f51944a06cccee8f59a</dataSetUid>
    <errorCount>0</errorCount>
    <lastEntryDate>2013-03-20T10:45:48-05:00</lastEntryDate>
    <queuedCount>2</queuedCount>
    <startDate>2013-03-20T10:45:48-05:00</startDate>
    <warningCount>1</warningCount>
</dataSetStatus>"""
REFERENCE = "reference code (?P<ref>[0-9a-f]{32})"


# --- conditions (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("queuedCount == 0", False),
        ("queuedCount == 2", True),
        ("queuedCount != 0", True),
        ("errorCount > 0", False),
        ("warningCount >= 1", True),
        ("completedCount < 5", False),
        ("completedCount <= 5", True),
        ("errorCount > 0 or warningCount > 0", True),
        ("queuedCount == 0 and errorCount == 0", False),
        # and binds tighter than or
        ("queuedCount == 0 and errorCount == 0 or warningCount == 1", True),
        ("queuedCount == 0 and (errorCount == 0 or warningCount == 1)", False),
        ('dataSetUid == "afc3d6e84df84f51944a06cccee8f59a"', True),
        ("dataIntegrationId == '_123_1'", True),
        ("dataSetStatus.errorCount == 0", True),
        ("dataIntegrationId > 3", False),  # not a number: a numeric comparison is false
        ("completedCount == 5.0", True),
    ],
)
def test_conditions_compare_the_fields_of_an_xml_status(text: str, expected: bool) -> None:
    assert parse_condition(text).holds(parse_answer(BLACKBOARD_XML)) is expected


def test_conditions_on_json_answers_follow_dotted_paths() -> None:
    answer = parse_answer(
        b'{"state": "done", "counts": {"errors": 0, "rows": 12}, "items": [{"s": "ok"}]}'
    )
    assert parse_condition('state == "done" and counts.errors == 0').holds(answer)
    assert parse_condition('items.0.s == "ok" and counts.rows > 10').holds(answer)
    assert not parse_condition('state != "done"').holds(answer)
    with pytest.raises(MissingField, match=r"no key counts\.missing"):
        parse_condition("counts.missing == 1").holds(answer)
    with pytest.raises(MissingField, match="no element nothing"):
        parse_condition("nothing == 1").holds(parse_answer(BLACKBOARD_XML))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty condition"),
        ("queuedCount =", "cannot read"),
        ("queuedCount == ", "expected a number or a quoted string"),
        ("queuedCount == zero", "expected a number or a quoted string"),
        ("== 0", "expected a field name"),
        ("a == 1 and", "expected a field name"),
        ("(a == 1", "expected ')'"),
        ("a == 1)", "unexpected ')'"),
        ("__import__('os').system('x')", "cannot read"),
        ("import os", "expected a comparison"),
        ('a == "open', "cannot read"),
        ("a == 1 b == 2", "unexpected 'b'"),
    ],
)
def test_a_condition_that_does_not_parse_says_where(text: str, words: str) -> None:
    with pytest.raises(ConditionError, match=re.escape(words)) as caught:
        parse_condition(text)
    assert "\n" not in caught.value.one_line()


def test_the_condition_reports_its_fields_in_order() -> None:
    condition = parse_condition("queuedCount == 0 and (errorCount == 0 or queuedCount < 1)")
    assert condition.fields == ("queuedCount", "errorCount")


def test_status_answers_with_a_doctype_or_neither_format_are_refused() -> None:
    with pytest.raises(AnswerError, match="DOCTYPE"):
        parse_answer(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    with pytest.raises(AnswerError, match="neither XML nor JSON"):
        parse_answer(b"Success")
    with pytest.raises(AnswerError, match="not valid XML"):
        parse_answer(b"<a><b></a>")


def test_counts_text_shortens_the_known_counts() -> None:
    fields = parse_answer(BLACKBOARD_XML).fields()
    assert counts_text(fields) == "completed 5 / errors 0 / queued 2 / warnings 1"
    assert counts_text(json.dumps({"queuedCount": "12", "errorCount": 0})) == "queued 12 / errors 0"


def test_references_by_regex_and_by_json_pointer() -> None:
    answer = (
        b"Success: Feed File Uploaded. Use the reference code "
        b"afc3d6e84df84f51944a06cccee8f59a to track these records in the logs."
    )
    assert extract_reference(REFERENCE, answer) == "afc3d6e84df84f51944a06cccee8f59a"
    assert extract_reference(REFERENCE, b"Error: nothing") is None
    body = b'{"data": {"id": 42, "a/b": ["x", "y"]}}'
    assert extract_reference("/data/id", body) == "42"
    assert extract_reference("/data/a~1b/1", body) == "y"
    assert extract_reference("/data/none", body) is None
    assert extract_reference("/data", b"not json") is None


def test_the_idempotency_key_is_stable_per_delivery_and_file() -> None:
    key = idempotency_key("https://h:443/x", "a.csv", 7, "ab" * 32)
    assert key == idempotency_key("https://h:443/x", "a.csv", 7, "ab" * 32)
    assert key != idempotency_key("https://h:443/x", "a.csv", 8, "ab" * 32)
    assert key != idempotency_key("https://h:443/x", "a.csv", 7, "cd" * 32)


# --- config --------------------------------------------------------------------------------


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text('ids = [1]\n[source]\nkind = "dir"\npath = "mails"\n' + body)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("entry", "key", "words"),
    [
        ('status_done = "queuedCount = 0"', "deliver[0].status_done", "cannot read"),
        ('status_fail = "errorCount >"', "deliver[0].status_fail", "expected a number"),
        ("reference = 'code ([0-9a-f]+)'", "deliver[0].reference", "(?P<ref>"),
        ("reference = 'code (?P<ref>[0-9a-f'", "deliver[0].reference", "not a regular"),
        ("reference = 'code ([0-9a-f]+)'", "deliver[0].reference", "needs a group"),
        ('status_url = "ftp://h/x"', "deliver[0].status_url", "https://"),
        ('token = "t"\npassword = "p"', "deliver[0].token", "not both"),
    ],
)
def test_bad_https_options_fail_at_load_in_one_line_naming_the_key(
    tmp_path: Path, entry: str, key: str, words: str
) -> None:
    body = (
        '[[deliver]]\nurl = "https://learn.example.edu/endpoint/{type}/store"\n'
        "reference = 'code (?P<ref>[0-9a-f]{32})'\n"
        'status_url = "https://learn.example.edu/endpoint/dataSetStatus/{reference}"\n'
    )
    lines = [line for line in body.splitlines() if not line.startswith(entry.split(" ")[0])]
    with pytest.raises(ConfigError) as caught:
        load_monitor(_config(tmp_path, "\n".join([*lines, entry]) + "\n"))
    line = caught.value.one_line()
    assert key in line and words in line and "\n" not in line


def test_a_status_url_with_a_reference_needs_the_reference_option(tmp_path: Path) -> None:
    monitor = load_monitor(
        _config(
            tmp_path,
            '[[deliver]]\nurl = "https://h.example/in"\n'
            'status_url = "https://h.example/status/{reference}"\n',
        )
    )
    with pytest.raises(ConfigError, match=r"status_url: uses \{reference\} but reference is not"):
        open_destination(monitor.destinations[0])


# --- uploads ------------------------------------------------------------------------------


@pytest.fixture
def blackboard(start_server, tls_ca) -> BlackboardServer:
    return start_server(BlackboardServer(tls_ca.server))


def _sample(tmp_path: Path, name: str = "5-1-person.csv", size: int = 700_000) -> Outgoing:
    path = tmp_path / name
    # Not valid UTF-8 and with CR/LF and NUL: the body must arrive byte for byte.
    data = b"EXTERNAL_PERSON_KEY|USER_ID\r\n" + bytes(range(256)) * (size // 256)
    path.write_bytes(data)
    return Outgoing.from_path(path, name, hashlib.sha256(data).hexdigest())


def _destination(server: BlackboardServer, tls_ca, url: str, **options):
    config = DestinationConfig(url=url, ca_file=str(tls_ca.ca_file), retries=1, **options)
    return open_destination(config)


def test_a_raw_upload_sends_the_file_byte_for_byte_with_auth_and_headers(
    blackboard, tls_ca, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LEARN_PASSWORD", blackboard.password)
    item = _sample(tmp_path)
    destination = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.endpoint}/{{type}}/store",
        user=blackboard.user,
        password_env="LEARN_PASSWORD",
        headers={"X-Integration": "sis-1"},
        reference=REFERENCE,
    )
    with destination:
        placed = destination.put(item, item.name)
    (upload,) = blackboard.uploads
    assert upload.method == "POST" and upload.path == BASE + "/person/store"
    assert upload.body == item.source.read_bytes()
    assert upload.headers["Content-Length"] == str(item.bytes)
    assert upload.headers["Content-Type"] == "text/csv"
    assert upload.headers["X-Integration"] == "sis-1"
    assert upload.headers["Idempotency-Key"].startswith("exportmon-")
    assert placed.reference in blackboard.data_sets
    assert placed.location == f"{blackboard.endpoint}/person/store"


def test_a_multipart_upload_holds_the_file_byte_for_byte(blackboard, tls_ca, tmp_path) -> None:
    item = _sample(tmp_path, "5-1-course.csv")
    destination = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.origin}/upload/{{name}}",
        body="multipart",
        multipart_field="feed",
        reference="/data/id",
    )
    placed = destination.put(item, item.name)
    (upload,) = blackboard.uploads
    assert upload.path == "/upload/5-1-course.csv"
    message = EmailMessage()
    message["Content-Type"] = upload.headers["Content-Type"]
    assert message.get_content_type() == "multipart/form-data"
    boundary = message.get_param("boundary")
    parts = upload.body.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n" and len(parts) == 3
    head, _, content = parts[1].partition(b"\r\n\r\n")
    assert b'name="feed"; filename="5-1-course.csv"' in head
    assert content == item.source.read_bytes() + b"\r\n"
    assert int(upload.headers["Content-Length"]) == len(upload.body)
    assert placed.reference and len(placed.reference) == 16


def test_a_file_without_a_type_is_refused_for_a_type_url(blackboard, tls_ca, tmp_path) -> None:
    item = _sample(tmp_path, "users.txt", size=1000)
    destination = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.endpoint}/{{type}}/store",
        user=blackboard.user,
        password=blackboard.password,
    )
    with pytest.raises(DeliveryError, match=r"cannot tell the export type of users\.txt"):
        destination.put(item, item.name)
    assert blackboard.requests["store"] == 0
    typed = Outgoing(item.source, item.name, item.bytes, item.sha256, type="person")
    destination.put(typed, typed.name)
    assert blackboard.uploads[0].path == BASE + "/person/store"


def test_put_with_a_bearer_token(blackboard, tls_ca, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-123456789abcdef")
    item = _sample(tmp_path, size=1000)
    destination = _destination(
        blackboard, tls_ca, f"{blackboard.origin}/upload/in", method="PUT", token_env="API_TOKEN"
    )
    destination.put(item, item.name)
    (upload,) = blackboard.uploads
    assert upload.method == "PUT"
    assert upload.headers["Authorization"] == "Bearer tok-123456789abcdef"
    assert upload.body == item.source.read_bytes()


def test_a_307_is_followed_with_the_body_and_a_redirect_to_a_private_host_refused(
    blackboard, tls_ca, tmp_path
) -> None:
    item = _sample(tmp_path, size=1000)
    target = f"{blackboard.origin}/upload/moved"
    destination = _destination(blackboard, tls_ca, f"{blackboard.origin}/redirect?to={target}")
    destination.put(item, item.name)
    assert blackboard.uploads[-1].path == "/upload/moved"
    assert blackboard.uploads[-1].body == item.source.read_bytes()
    # The host the user configured is trusted; a private address it redirects to is not.
    elsewhere = f"https://10.0.0.1:{blackboard.port}/upload/x"
    destination = _destination(blackboard, tls_ca, f"{blackboard.origin}/redirect?to={elsewhere}")
    with pytest.raises(DeliveryError, match=r"refused to upload to 10\.0\.0\.1") as caught:
        destination.put(item, item.name)
    assert not caught.value.retryable
    assert len(blackboard.uploads) == 1
    # A 302 would turn the POST into a GET: a failure, not a silent success.
    destination = _destination(
        blackboard, tls_ca, f"{blackboard.origin}/redirect?code=302&to={target}"
    )
    with pytest.raises(DeliveryError, match="redirect that would drop the upload"):
        destination.put(item, item.name)


def test_a_4xx_is_one_line_with_the_start_of_the_body_and_not_retried(
    blackboard, tls_ca, tmp_path
) -> None:
    item = _sample(tmp_path, size=1000)
    destination = _destination(blackboard, tls_ca, f"{blackboard.origin}/answer/422")
    with pytest.raises(DeliveryError) as caught:
        destination.put(item, item.name)
    line = caught.value.one_line()
    assert "answered 422" in line and "Bad request: the file is refused xxx" in line
    assert "\n" not in line and "\t" not in line and len(line) < 400
    assert not caught.value.retryable
    assert blackboard.requests["answer"] == 1


def test_a_5xx_is_retried_and_wrong_credentials_are_not(blackboard, tls_ca, tmp_path) -> None:
    item = _sample(tmp_path, size=1000)
    blackboard.store_failures = [503]
    destination = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.endpoint}/person/store",
        user=blackboard.user,
        password=blackboard.password,
        reference=REFERENCE,
    )
    destination.put(item, item.name)
    assert blackboard.requests["store"] == 2
    keys = {u.headers["Idempotency-Key"] for u in blackboard.uploads}
    assert len(keys) == 1  # the retry repeats the key
    wrong = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.endpoint}/person/store",
        user=blackboard.user,
        password="wrong-password",
    )
    with pytest.raises(DeliveryError, match="answered 401") as caught:
        wrong.put(item, item.name)
    assert "wrong-password" not in caught.value.one_line()
    assert blackboard.requests["store"] == 3


def test_an_answer_without_the_reference_fails_the_delivery_when_the_status_needs_it(
    blackboard, tls_ca, tmp_path, caplog
) -> None:
    item = _sample(tmp_path, size=1000)
    destination = _destination(
        blackboard,
        tls_ca,
        f"{blackboard.origin}/upload/in",
        reference=REFERENCE,
        status_url=f"{blackboard.endpoint}/dataSetStatus/{{reference}}",
    )
    with pytest.raises(DeliveryError, match="holds no reference") as caught:
        destination.put(item, item.name)
    assert not caught.value.retryable
    informative = _destination(
        blackboard, tls_ca, f"{blackboard.origin}/upload/in", reference=REFERENCE
    )
    placed = informative.put(item, item.name)
    assert placed.reference is None and "holds no reference" in caplog.text


# --- status tracking through deliver_export --------------------------------------------------


class Export:
    """A monitor state folder with an unpacked export of the gem's four files."""

    def __init__(
        self, tmp_path: Path, gem_fixtures: Path, server: BlackboardServer, tls_ca
    ) -> None:
        self.root = tmp_path / "state"
        (self.root / "downloads").mkdir(parents=True)
        download = self.root / "downloads" / GEM_ZIP
        shutil.copyfile(gem_fixtures / GEM_ZIP, download)
        self.ledger = Ledger.open(self.root / "ledger.sqlite")
        mail = self.ledger.add_mail(source="test", uid="1", message_id="<m1@test>")
        export = self.ledger.add_export(
            key="token-1", kind="link", mail_id=mail.id, export_id=5, file_name=GEM_ZIP
        )
        export = self.ledger.advance_export(export.id, "downloaded", download_path=str(download))
        self.server = server
        self.tls_ca = tls_ca
        self.export = unpack_export(self.monitor(), self.ledger, export)

    def monitor(self, **options) -> MonitorConfig:
        entry = {
            "url": f"{self.server.endpoint}/{{type}}/store",
            "user": self.server.user,
            "password": self.server.password,
            "ca_file": str(self.tls_ca.ca_file),
            "reference": REFERENCE,
            "status_url": f"{self.server.endpoint}/dataSetStatus/{{reference}}",
            "status_done": "queuedCount == 0",
            "status_fail": "errorCount > 0",
            "status_warn": "warningCount > 0",
            "status_interval": 0.0,
            "retries": 0,
            **options,
        }
        return MonitorConfig(
            name="t", ids=[5], root=str(self.root), deliver_list=[DestinationConfig(**entry)]
        )

    def deliver(self, **options):
        current = self.ledger.export(self.export.id)
        assert current is not None
        return deliver_export(self.monitor(**options), self.ledger, current)


@pytest.fixture
def tracked(tmp_path, gem_fixtures, blackboard, tls_ca):
    made = Export(tmp_path, gem_fixtures, blackboard, tls_ca)
    yield made
    made.ledger.close()


def test_status_is_polled_run_after_run_until_done_and_nothing_is_sent_twice(tracked, caplog):
    tracked.server.queued = 2
    caplog.set_level(logging.INFO)
    export = tracked.deliver()  # uploads the four files, polls each once: 1 still queued
    assert export.state == "unpacked" and export.error is None
    assert tracked.server.requests["store"] == 4
    deliveries = tracked.ledger.processing_deliveries(export_row=export.id)
    assert [d.status for d in deliveries] == ["submitted"] * 4
    assert all(d.reference in tracked.server.data_sets for d in deliveries)
    assert "queued 1" in counts_text(deliveries[0].status_fields)
    export = tracked.deliver()
    assert export.state == "delivered"
    assert tracked.server.requests["store"] == 4  # never uploaded again
    assert tracked.server.requests["status"] == 8
    done = tracked.ledger.processing_deliveries(export_row=export.id)
    assert [d.status for d in done] == ["done"] * 4
    assert counts_text(done[0].status_fields) == "completed 2 / errors 0 / queued 0 / warnings 0"
    for name in NAMES.values():
        assert tracked.server.posts_of(name.rsplit("-", 1)[1].split(".")[0].upper()) <= 4
    kinds = sorted(d.type for d in tracked.server.data_sets.values())
    assert kinds == sorted(NAMES)
    assert "processed: completed 2" in caplog.text


def test_the_next_poll_is_due_by_each_destinations_own_interval(tracked):
    from exportmon.actions.status_tracking import next_poll

    tracked.server.queued = 5
    tracked.deliver(status_interval=3600.0)  # submitted and polled once: still queued
    monitor = tracked.monitor(status_interval=3600.0)
    assert 3590 < (next_poll(monitor, tracked.ledger) or 0) <= 3600
    # Another tracked destination with a short interval and nothing submitted does
    # not make the watcher wake every second for this one.
    other = dataclasses.replace(
        monitor.deliver_list[0], url=f"{tracked.server.endpoint}/other/store", status_interval=1.0
    )
    both = dataclasses.replace(monitor, deliver_list=[*monitor.deliver_list, other])
    assert 3590 < (next_poll(both, tracked.ledger) or 0) <= 3600
    # Nothing waits for a destination no longer configured.
    assert next_poll(dataclasses.replace(monitor, deliver_list=[other]), tracked.ledger) is None


def test_a_failed_upload_retried_clears_the_error_while_the_status_is_awaited(tracked):
    tracked.server.queued = 2
    tracked.server.store_failures = [500] * 4  # each file fails once (retries = 0)
    with pytest.raises(DeliveryError, match="answered 500"):
        tracked.deliver()
    tracked.ledger.fail_export(tracked.export.id, "deliver", "answered 500", None)
    export = tracked.deliver()
    assert export.state == "unpacked" and export.error is None
    assert tracked.deliver().state == "delivered"
    assert tracked.server.requests["store"] == 4 + 4


def test_a_poll_waits_for_its_interval(tracked):
    tracked.server.queued = 5
    tracked.deliver(status_interval=3600.0)
    tracked.deliver(status_interval=3600.0)
    assert tracked.server.requests["status"] == 0
    assert tracked.server.requests["store"] == 4


def test_errors_fail_the_export_in_one_line_with_the_counts(tracked):
    tracked.server.queued = 1
    tracked.server.errors = 1
    with pytest.raises(DeliveryError) as caught:
        tracked.deliver()
    line = caught.value.one_line()
    assert "processing failed (errorCount > 0)" in line
    assert "completed 0 / errors 1 / queued 0" in line and "reference " in line
    assert not caught.value.retryable
    assert {d.status for d in tracked.ledger.processing_deliveries()} == {"failed"}
    assert "(a retry sends the file again)" in line
    # What --retry-failed does: each file is sent again, as a new delivery.
    tracked.server.errors = 0
    keys = {u.headers["Idempotency-Key"] for u in tracked.server.uploads}
    export = tracked.deliver()
    assert export.state == "delivered"
    assert tracked.server.requests["store"] == 8
    assert len({u.headers["Idempotency-Key"] for u in tracked.server.uploads} - keys) == 4
    latest = tracked.ledger.processing_deliveries(export_row=export.id, latest=True)
    assert [d.status for d in latest] == ["done"] * 4


def test_a_processing_failure_comes_first_so_the_export_is_not_retried_by_itself(tracked):
    tracked.server.queued = 1
    tracked.server.errors = 1
    monitor = tracked.monitor()
    # A second destination that fails in a way a later run would retry by itself.
    monitor.destinations = [
        DestinationConfig(
            url=f"https://127.0.0.1:{tracked.server.port}/answer/503",
            retries=0,
            ca_file=str(tracked.tls_ca.ca_file),
        ),
        *monitor.destinations,
    ]
    with pytest.raises(DeliveryError) as caught:
        deliver_export(monitor, tracked.ledger, tracked.export)
    assert "processing failed" in caught.value.one_line()
    assert not caught.value.retryable


def test_warnings_deliver_with_a_warning_line(tracked, caplog):
    tracked.server.queued = 1
    tracked.server.warnings = 3
    export = tracked.deliver()
    assert export.state == "delivered"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert (
        "processed with warnings (warningCount > 0): completed 1 / errors 0" in warnings[0].message
    )
    assert {d.status for d in tracked.ledger.processing_deliveries()} == {"warned"}
    shown = processing_status(tracked.ledger, 5)
    assert waiting_summary(shown) == (
        "4 files delivered with warnings: completed 4 / errors 0 / queued 0 / warnings 12"
    )


def test_a_500_from_the_status_url_is_asked_again_later(tracked, caplog):
    tracked.server.queued = 1
    tracked.server.status_failures = 4  # every first poll fails (retries = 0)
    export = tracked.deliver()
    assert export.state == "unpacked" and export.error is None
    assert "answered 500" in caplog.text and "asking again later" in caplog.text
    assert "\x1b" not in caplog.text
    assert tracked.deliver().state == "delivered"
    assert tracked.server.requests["store"] == 4


@pytest.mark.parametrize(
    "answer",
    [
        b"[" * 30000 + b"]" * 30000,  # deeper than the JSON parser can follow
        b'{"queuedCount": ' + b"9" * 5000 + b"}",  # an integer too long to convert
        b"<dataSetStatus><queuedCount>0</queuedCount>",  # cut short
        b"\x00\xff" * 100,
    ],
)
def test_a_hostile_status_answer_is_asked_again_later(tracked, caplog, answer):
    tracked.server.queued = 1
    tracked.server.odd_status = [answer] * 4  # the first poll of each file
    export = tracked.deliver()
    assert export.state == "unpacked" and export.error is None
    assert caplog.text.count("asking again later") == 4
    assert tracked.deliver().state == "delivered"


def test_a_status_that_never_completes_times_out(tracked):
    tracked.server.never_complete = True
    export = tracked.deliver()
    assert export.state == "unpacked"
    with pytest.raises(DeliveryError, match="still not processed after status_timeout") as caught:
        tracked.deliver(status_timeout=0.0)
    assert "queued 3" in caught.value.one_line()
    assert {d.status for d in tracked.ledger.processing_deliveries()} == {"timeout"}


# --- the CLI: run --once end to end, restarts --------------------------------------------------


def _person_csv() -> bytes:
    return (
        b"EXTERNAL_PERSON_KEY|DATA_SOURCE_KEY|USER_ID|FIRSTNAME|LASTNAME|EMAIL\r\n"
        b"p1|SIS|jdoe|Jane|Doe|jane@example.edu\r\n"
        b"p2|SIS|rroe|Richard|Roe|richard@example.edu\r\n"
    )


def _course_csv() -> bytes:
    return b"EXTERNAL_COURSE_KEY|DATA_SOURCE_KEY|COURSE_ID|COURSE_NAME\r\nc1|SIS|C1|Chemistry\r\n"


def _cli_monitor(tmp_path: Path, server: BlackboardServer, tls_ca, **entry) -> Path:
    mails = tmp_path / "mails"
    mails.mkdir()
    attachments = [("5-1-person.csv", _person_csv()), ("5-1-course.csv", _course_csv())]
    (mails / "a.eml").write_bytes(export_mail(attachments=attachments, export_id=5))
    data = {
        "ids": [5],
        "root": str(tmp_path / "state"),
        "source": {"kind": "dir", "path": str(mails), "archive": ""},
        "deliver": [
            {
                "url": f"https://127.0.0.1:{server.port}{BASE}/{{type}}/store",
                "user": server.user,
                "password_env": "LEARN_PASSWORD",
                "ca_file": str(tls_ca.ca_file),
                "reference": REFERENCE,
                "status_url": f"https://127.0.0.1:{server.port}{BASE}/dataSetStatus/{{reference}}",
                "status_done": "queuedCount == 0",
                "status_fail": "errorCount > 0",
                "status_warn": "warningCount > 0",
                "status_interval": "0s",
                "retries": 0,
                **entry,
            }
        ],
    }
    return write_config(tmp_path / "monitors", data, name="learn")


def _status_json(config: Path) -> dict:
    shown = run_cli("-c", config, "status", "--json")
    return json.loads(shown.stdout)


def test_run_once_uploads_each_file_once_and_later_runs_poll_to_delivered(
    blackboard, tls_ca, tmp_path
) -> None:
    blackboard.queued = 3
    config = _cli_monitor(tmp_path, blackboard, tls_ca)
    env = {"LEARN_PASSWORD": blackboard.password}
    first = run_cli("-c", config, "run", "--once", env=env)
    assert first.code == 0, first.output
    assert blackboard.requests["store"] == 2
    assert blackboard.posts_of("EXTERNAL_PERSON_KEY") == 1
    assert blackboard.posts_of("EXTERNAL_COURSE_KEY") == 1
    bodies = sorted(u.body for u in blackboard.uploads)
    assert bodies == sorted([_person_csv(), _course_csv()])
    assert sorted(d.type for d in blackboard.data_sets.values()) == ["course", "person"]
    assert blackboard.password not in first.output
    (row,) = _status_json(config)["monitors"][0]["exports"]
    assert "2 files being processed: completed 2 / errors 0 / queued 4" in row["reason"]
    shown = sorted(row["processing"], key=lambda p: p["file"])
    assert [(p["file"], p["status"]) for p in shown] == [
        ("5-1-course.csv", "submitted"),
        ("5-1-person.csv", "submitted"),
    ]
    assert shown[0]["counts"] == "completed 1 / errors 0 / queued 2 / warnings 0"
    assert shown[0]["reference"] in blackboard.data_sets
    assert shown[0]["fields"]["queuedCount"] == "2"
    table = run_cli("-c", config, "status", env={"COLUMNS": "80"})
    assert all(len(line) <= 80 for line in table.stdout.splitlines())
    wide = run_cli("-c", config, "status", "--wide")
    assert "2 files being processed: completed 2 / errors 0 / queued 4" in wide.stdout
    for _ in range(2):
        again = run_cli("-c", config, "run", "--once", env=env)
        assert again.code == 0, again.output
    assert blackboard.requests["store"] == 2  # polled, never uploaded again
    assert blackboard.requests["status"] == 6
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        exports = ledger.exports()
        assert {e.state for e in exports} == {"delivered"}
        assert {d.status for d in ledger.processing_deliveries()} == {"done"}
    (row,) = _status_json(config)["monitors"][0]["exports"]
    assert {p["status"] for p in row["processing"]} == {"done"}
    assert "being processed" not in row["reason"]
    report = json.loads(run_cli("-c", config, "report", "--json").stdout)
    files = [f for e in report["exports"] for f in e["file_details"]]
    assert [f["processing"] for f in files] == [
        ["done: completed 3 / errors 0 / queued 0 / warnings 0"]
    ] * 2


def test_a_run_killed_while_polling_resumes_polling_and_never_uploads_again(
    blackboard, tls_ca, tmp_path
) -> None:
    import threading

    blackboard.queued = 1
    blackboard.hold_status = threading.Event()
    config = _cli_monitor(tmp_path, blackboard, tls_ca)
    env = {**os.environ, "LEARN_PASSWORD": blackboard.password}
    child = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert blackboard.status_waiting.wait(60), "the run never polled"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    blackboard.hold_status.set()
    blackboard.hold_status = None
    # Each attachment is an export; the first was uploaded and was being polled.
    assert blackboard.requests["store"] == 1
    (polled,) = blackboard.data_sets.values()
    second = run_cli("-c", config, "run", "--once", env={"LEARN_PASSWORD": blackboard.password})
    assert second.code == 0, second.output
    # The restart polled the first export's file and uploaded only the other one.
    assert blackboard.requests["store"] == 2
    assert blackboard.posts_of("EXTERNAL_PERSON_KEY") == 1
    assert blackboard.posts_of("EXTERNAL_COURSE_KEY") == 1
    assert polled.polls == 2
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        assert {e.state for e in ledger.exports()} == {"delivered"}


def _both_delivered(config: Path) -> bool:
    """Whether both exports of the monitor are delivered, read beside the watcher
    (read-only: the watcher creates the ledger)."""
    ledger_path = load_monitor(config).dirs.ledger
    try:
        with sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True) as db:
            states = [row[0] for row in db.execute("SELECT state FROM exports")]
    except sqlite3.Error:
        return False
    return states == ["delivered", "delivered"]


def _watch_until_delivered(
    blackboard: BlackboardServer, tls_ca, tmp_path: Path, poll_interval: str, **entry
) -> tuple[str, float]:
    """Run the watcher on a monitor with ``poll_interval`` until both exports are
    delivered; return its output and how long that took."""
    config = _cli_monitor(tmp_path, blackboard, tls_ca, **entry)
    text = config.read_text().replace("ids = [5]", f'ids = [5]\npoll_interval = "{poll_interval}"')
    config.write_text(text)
    started = time.monotonic()
    watcher = Watcher(config, env={"LEARN_PASSWORD": blackboard.password})
    try:
        wait_for(lambda: _both_delivered(config), timeout=60)
    finally:
        code, output = watcher.stop()
    assert code == 0, output
    return output, time.monotonic() - started


def test_the_watcher_polls_on_schedule_until_delivered(blackboard, tls_ca, tmp_path) -> None:
    blackboard.queued = 3
    output, _ = _watch_until_delivered(blackboard, tls_ca, tmp_path, "1s")
    assert blackboard.requests["store"] == 2
    assert blackboard.requests["status"] == 6
    assert "processed: completed 3 / errors 0 / queued 0" in output


def test_the_watcher_polls_the_status_on_its_own_interval_not_the_mail_polls(
    blackboard, tls_ca, tmp_path
) -> None:
    blackboard.queued = 2
    output, took = _watch_until_delivered(blackboard, tls_ca, tmp_path, "1h", status_interval="1s")
    # Two polls per file, a second apart, not an hour.
    assert took < 30
    assert blackboard.requests["status"] == 4
    # Each cycle that polls says what the answer was, not that the export "resumes".
    assert "is being processed: " in output and "resuming export" not in output


def test_a_stop_request_ends_a_waiting_status_poll_at_once(blackboard, tls_ca, tmp_path) -> None:
    import threading

    blackboard.queued = 1
    blackboard.hold_status = threading.Event()
    config = _cli_monitor(tmp_path, blackboard, tls_ca, timeout="60s")
    watcher = Watcher(config, env={"LEARN_PASSWORD": blackboard.password}, args=("--once",))
    try:
        assert blackboard.status_waiting.wait(60), "the run never polled"
        asked = time.monotonic()
        _, output = watcher.stop(signal.SIGTERM, timeout=10)
        assert time.monotonic() - asked < 5, output
    finally:
        blackboard.hold_status.set()
        watcher.kill()
    assert "Traceback" not in output
    blackboard.hold_status = None
    again = run_cli("-c", config, "run", "--once", env={"LEARN_PASSWORD": blackboard.password})
    assert again.code == 0, again.output
    assert blackboard.requests["store"] == 2  # the stopped run's upload was not repeated
    assert blackboard.posts_of("EXTERNAL_PERSON_KEY") == 1


@pytest.mark.parametrize("honour", [True, False])
def test_a_crash_between_the_upload_and_its_record_resends_with_the_same_key(
    blackboard, tls_ca, tmp_path, honour: bool
) -> None:
    blackboard.queued = 1
    blackboard.honour_idempotency = honour
    config = _cli_monitor(tmp_path, blackboard, tls_ca)
    env = {"LEARN_PASSWORD": blackboard.password}
    crashed = run_cli(
        "-c", config, "run", "--once", env={**env, "EXPORTMON_TEST_KILL_AT": "deliver.placed:1"}
    )
    assert crashed.code == -signal.SIGKILL
    assert blackboard.requests["store"] == 1
    again = run_cli("-c", config, "run", "--once", env=env)
    assert again.code == 0, again.output
    assert "again after an interrupted upload that may have reached it" in again.output
    assert "with the same Idempotency-Key" in " ".join(again.output.split())
    assert blackboard.requests["store"] == 3  # the interrupted one twice, the other once
    first, second = blackboard.uploads[0], blackboard.uploads[1]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    # A system that ignores the key makes a second data set of the same records.
    assert len(blackboard.data_sets) == (2 if honour else 3)
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        assert {e.state for e in ledger.exports()} == {"delivered"}


# --- the crash suite with an HTTPS destination ----------------------------------------------


@pytest.fixture
def https_world(tmp_path, mail_user, https_server, ftps_server, tls_ca, blackboard):
    return CrashWorld(
        tmp_path / "world",
        mail_user,
        https_server,
        ftps_server,
        tls_ca,
        seed=11,
        blackboard=blackboard,
    )


# The first export's file goes to the folder, FTPS, the archive copy, then HTTPS: its
# fourth deliver.* point is the HTTPS upload.
@pytest.mark.parametrize(
    ("point", "stores"),
    [("deliver.started:4", 0), ("deliver.placed:4", 1), ("status.polled:1", 1)],
)
def test_a_kill_during_an_upload_or_a_poll_loses_nothing_and_uploads_nothing_twice(
    https_world, point, stores
):
    https_world.add_mails(2)  # one CSV link, one mail with two attachments
    killed = https_world.run(kill_at=point)
    assert killed.killed == "point", killed.log
    assert https_world.blackboard.requests["store"] == stores
    finished = https_world.run()
    assert finished.code == 0, finished.log
    assert https_world.check(Figures(), final=True) == []
    assert len(https_world.blackboard.data_sets) == 3
    # A kill after the delivery was recorded started may have come after the upload:
    # the resend says so, and repeats the key.
    warned = "again after an interrupted upload that may have reached it" in finished.log
    assert warned is point.startswith(("deliver.started", "deliver.placed"))
    # Only the upload whose answer was lost is sent twice.
    assert https_world.blackboard.requests["store"] == 3 + (point == "deliver.placed:4")


@pytest.mark.slow
def test_killed_runs_with_an_https_destination_deliver_every_file_once(https_world):
    figures = crash_loop(https_world, kills=12, mails=5, seed=11, report=print)
    print(figures.table())
    print(figures.details())
    assert figures.problems == []
    assert figures.lost == figures.duplicated == figures.partial == 0
    assert figures.archived == figures.export_mails
