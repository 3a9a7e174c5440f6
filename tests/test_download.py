"""Downloading export links against the real HTTPS fixture server (and pure link checks)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import os
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from exportmon.download import (
    DownloadSettings,
    check_not_expired,
    display_url,
    disposition_name,
    download,
    link_expiry,
)
from exportmon.errors import DownloadError, LinkExpired, LinkRefused, TLSError
from exportmon.net.http import address_problem
from servers.web import WebServer


@pytest.fixture
def settings(tls_ca):
    return DownloadSettings(
        ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",), retries=3, backoff=0.01
    )


@pytest.fixture
def body():
    return os.urandom(2_500_000)


def no_sleep(seconds: float) -> None:
    pass


def test_downloads_into_the_folder_through_a_part_file(https_server, settings, body, tmp_path):
    url = https_server.add("/exports/777/20261123-export.zip", body)
    result = download(url, tmp_path / "d", file_name="20261123-export.zip", settings=settings)
    assert result.path == tmp_path / "d" / "20261123-export.zip"
    assert result.path.read_bytes() == body
    assert result.bytes == len(body)
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["20261123-export.zip"]
    assert result.attempts == 1 and not result.resumed
    (request,) = https_server.requests_for("/exports/777/20261123-export.zip")
    assert request.tls and request.headers["Accept-Encoding"] == "identity"


def test_a_broken_connection_is_resumed_with_a_range_request(
    https_server, settings, body, tmp_path
):
    url = https_server.add("/x.zip", body, drop_after=1_000_000)
    result = download(url, tmp_path, file_name="x.zip", settings=settings, sleep=no_sleep)
    assert result.path.read_bytes() == body
    assert result.resumed and result.attempts == 2
    assert [r.range for r in https_server.requests_for("/x.zip")] == [None, "bytes=1000000-"]
    # Hashing runs beside the network reads: what a retry resumes from was hashed whole.
    assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_a_reset_connection_is_resumed_too(https_server, settings, body, tmp_path):
    url = https_server.add("/x.zip", body, drop_after=700_000, drop_reset=True)
    result = download(url, tmp_path, file_name="x.zip", settings=settings, sleep=no_sleep)
    assert result.path.read_bytes() == body and result.resumed


def test_a_part_file_left_by_a_killed_process_is_resumed(https_server, settings, body, tmp_path):
    url = https_server.add("/x.zip", body, drop_after=1_200_000, drop_times=1)
    once = DownloadSettings(**{**settings.__dict__, "retries": 0})
    with pytest.raises(DownloadError, match=r"sent 1\.2 MB of the 2\.5 MB") as raised:
        download(url, tmp_path, file_name="x.zip", settings=once)
    assert raised.value.retryable
    assert (tmp_path / ".x.zip.part").stat().st_size == 1_200_000
    result = download(url, tmp_path, file_name="x.zip", settings=settings)
    assert result.path.read_bytes() == body
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert https_server.requests_for("/x.zip")[-1].range == "bytes=1200000-"
    assert not (tmp_path / ".x.zip.part").exists()


def test_server_errors_are_retried_with_backoff(https_server, settings, body, tmp_path):
    url = https_server.add("/x.csv", body, fail_times=2, fail_status=503)
    waits: list[float] = []
    result = download(url, tmp_path, file_name="x.csv", settings=settings, sleep=waits.append)
    assert result.path.read_bytes() == body and result.attempts == 3
    assert len(waits) == 2 and waits[1] > waits[0]


def test_retries_are_bounded(https_server, settings, tmp_path):
    url = https_server.add("/x.csv", b"data", fail_times=10, fail_status=500)
    with pytest.raises(DownloadError, match="gave up after 4 attempts") as raised:
        download(url, tmp_path, file_name="x.csv", settings=settings, sleep=no_sleep)
    assert raised.value.retryable
    assert len(https_server.requests_for("/x.csv")) == 4


def test_not_found_is_permanent_and_leaves_nothing(https_server, settings, tmp_path):
    url = https_server.add("/gone.zip", b"", status=404)
    with pytest.raises(DownloadError, match="404") as raised:
        download(url, tmp_path, file_name="gone.zip", settings=settings, sleep=no_sleep)
    assert not raised.value.retryable
    assert "re-run the export" in raised.value.one_line()
    assert list(tmp_path.iterdir()) == []
    assert len(https_server.requests_for("/gone.zip")) == 1


def test_a_short_body_against_content_length_fails_clearly(https_server, settings, tmp_path):
    url = https_server.add("/x.csv", b"a" * 1000, wrong_length=5000)
    with pytest.raises(DownloadError, match=r"sent 1\.0 kB .*announced 5\.0 kB") as raised:
        download(url, tmp_path, file_name="x.csv", settings=settings, sleep=no_sleep)
    assert raised.value.retryable
    assert not (tmp_path / "x.csv").exists()


def test_an_expired_presigned_link_is_refused_before_any_request(https_server, settings, tmp_path):
    expired = int((datetime.now(timezone.utc) - timedelta(days=2)).timestamp())
    url = https_server.add(f"/x.csv?AWSAccessKeyId=AKIA&Signature=abc&Expires={expired}", b"x")
    with pytest.raises(LinkExpired, match="expired on") as raised:
        download(url, tmp_path, file_name="x.csv", settings=settings)
    assert raised.value.hint == "ask the sender to re-run the export"
    assert not raised.value.retryable
    assert https_server.requests == []


def test_a_403_for_a_link_that_looks_expired_says_so(https_server, settings, tmp_path):
    start = (datetime.now(timezone.utc) - timedelta(minutes=59)).strftime("%Y%m%dT%H%M%SZ")
    query = f"X-Amz-Date={start}&X-Amz-Expires=3600&X-Amz-Signature=abc"
    url = https_server.add(
        f"/x.csv?{query}",
        b"<Error><Code>AccessDenied</Code>Request has expired</Error>",
        status=403,
    )
    with pytest.raises(LinkExpired, match="refused the link \\(403\\): it has expired"):
        download(url, tmp_path, file_name="x.csv", settings=settings)


def test_a_plain_403_is_a_permanent_error(https_server, settings, tmp_path):
    url = https_server.add("/x.csv", b"denied", status=403)
    with pytest.raises(DownloadError, match="refused access \\(403") as raised:
        download(url, tmp_path, file_name="x.csv", settings=settings)
    assert not isinstance(raised.value, LinkExpired) and not raised.value.retryable


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/export.zip", "private address"),
        ("https://[::1]:8443/export.zip", "loopback"),
        ("http://[fd00:ec2::254]/x", "cloud metadata"),
        ("http://[::ffff:192.168.1.5]/x", "private address"),
        ("http://100.64.0.1/x", "reserved address"),
        ("http://0.0.0.0/x", "address"),
    ],
)
def test_links_to_internal_addresses_are_refused(url, problem, settings, tmp_path):
    with pytest.raises(LinkRefused, match=problem) as raised:
        download(url, tmp_path, settings=settings)
    assert "download.allow_hosts" in raised.value.one_line() or "metadata" in problem
    assert list(tmp_path.iterdir()) == []


def test_loopback_is_refused_unless_allowed(https_server, tls_ca, tmp_path):
    url = https_server.add("/x.csv", b"x")
    with pytest.raises(LinkRefused, match=r"127\.0\.0\.1: a loopback address"):
        download(url, tmp_path, settings=DownloadSettings(ca_file=str(tls_ca.ca_file)))
    assert https_server.requests == []
    allowed = DownloadSettings(ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.0/8",))
    assert download(url, tmp_path, file_name="x.csv", settings=allowed).bytes == 1


def test_a_redirect_to_a_private_address_is_refused(https_server, settings, tmp_path):
    url = https_server.add("/r", redirect_to="https://10.1.2.3/export.zip")
    with pytest.raises(LinkRefused, match=r"10\.1\.2\.3: a private address"):
        download(url, tmp_path, settings=settings)


def test_redirects_are_followed_within_the_limit(https_server, settings, body, tmp_path):
    final = https_server.add("/real/export.zip", body)
    first = https_server.add("/a", redirect_to=https_server.add("/b", redirect_to=final))
    result = download(first, tmp_path, settings=settings)
    assert result.path.name == "export.zip" and result.path.read_bytes() == body
    strict = DownloadSettings(**{**settings.__dict__, "max_redirects": 1})
    with pytest.raises(DownloadError, match="more than 1 redirects"):
        download(first, tmp_path / "again", settings=strict)


def test_a_redirect_to_plain_http_is_refused(https_server, http_server, settings, tmp_path):
    url = https_server.add("/r", redirect_to=http_server.add("/x.csv", b"x"))
    with pytest.raises(LinkRefused, match="from https to plain http"):
        download(url, tmp_path, settings=settings)
    assert http_server.requests == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.zip", "file:///etc/passwd", "javascript:x"])
def test_only_http_and_https_links_are_downloaded(url, settings, tmp_path):
    with pytest.raises(LinkRefused, match="only http and https"):
        download(url, tmp_path, settings=settings)


def test_max_bytes_refuses_a_large_export_before_reading_it(https_server, tls_ca, tmp_path):
    url = https_server.add("/big.zip", b"z" * 10_000)
    small = DownloadSettings(
        ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",), max_bytes=5000
    )
    with pytest.raises(DownloadError, match=r"more than download\.max_bytes") as raised:
        download(url, tmp_path, file_name="big.zip", settings=small)
    assert not raised.value.retryable and list(tmp_path.iterdir()) == []


def test_an_untrusted_certificate_is_refused(tls_ca, start_server, tmp_path):
    server = start_server(WebServer(tls_ca.wrong_ca))
    url = server.add("/x.csv", b"x")
    settings = DownloadSettings(ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",))
    with pytest.raises(TLSError, match="certificate not trusted") as raised:
        download(url, tmp_path, settings=settings)
    assert "download.ca_file" in raised.value.one_line()
    assert server.requests == []


def test_a_certificate_for_another_host_is_refused(tls_ca, start_server, tmp_path):
    server = start_server(WebServer(tls_ca.wrong_host))
    settings = DownloadSettings(ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",))
    with pytest.raises(TLSError, match="for another host name"):
        download(server.add("/x.csv", b"x"), tmp_path, settings=settings)


def test_plain_http_works_for_allowed_hosts(http_server, settings, tmp_path):
    result = download(http_server.add("/x.csv", b"a,b\n"), tmp_path, settings=settings)
    assert result.path.read_bytes() == b"a,b\n"


def test_the_name_comes_from_content_disposition_when_the_link_has_none(
    https_server, settings, tmp_path
):
    url = https_server.add(
        "/download?id=5",
        b"a,b\n",
        headers={"Content-Disposition": "attachment; filename*=UTF-8''%C3%BCbersicht.csv"},
    )
    assert download(url, tmp_path, settings=settings).path.name == "übersicht.csv"


def test_a_checksum_from_the_server_is_verified(https_server, settings, body, tmp_path):
    good = base64.b64encode(hashlib.sha256(body).digest()).decode()
    url = https_server.add("/ok.zip", body, headers={"Repr-Digest": f"sha-256=:{good}:"})
    assert download(url, tmp_path, file_name="ok.zip", settings=settings).bytes == len(body)
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    url = https_server.add("/bad.zip", body, headers={"x-amz-checksum-sha256": bad})
    with pytest.raises(DownloadError, match="does not match the checksum"):
        download(url, tmp_path, file_name="bad.zip", settings=settings)
    assert not (tmp_path / "bad.zip").exists()


def test_progress_is_reported_with_the_total(https_server, settings, body, tmp_path):
    seen: dict[str, object] = {"advanced": 0}

    def factory(description, total):
        seen["description"], seen["total"] = description, total

        def advance(n):
            seen["advanced"] += n  # type: ignore[operator]

        return advance, lambda: seen.setdefault("done", True)

    url = https_server.add("/x.zip", body, drop_after=800_000)
    download(url, tmp_path, file_name="x.zip", settings=settings, progress=factory, sleep=no_sleep)
    assert seen == {
        "description": "x.zip",
        "total": len(body),
        "advanced": len(body),
        "done": True,
    }


def test_memory_stays_flat_whatever_the_size(https_server, settings, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(48):
            handle.write(os.urandom(1024 * 1024))
    url = https_server.add("/big.zip", big)
    tracemalloc.start()
    try:
        download(url, tmp_path / "out", file_name="big.zip", settings=settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "big.zip").stat().st_size == 48 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"peak Python allocation {peak} bytes for a 48 MiB download"


# --- pure checks ------------------------------------------------------------------


def test_expiry_of_presigned_links():
    v2 = "https://s3/x.csv?AWSAccessKeyId=A&Signature=s&Expires=1379102146"
    assert link_expiry(v2) == datetime(2013, 9, 13, 19, 55, 46, tzinfo=timezone.utc)
    v4 = "https://s3/x.csv?X-Amz-Date=20261123T084000Z&X-Amz-Expires=600&X-Amz-Signature=s"
    assert link_expiry(v4) == datetime(2026, 11, 23, 8, 50, tzinfo=timezone.utc)
    azure = "https://a.blob.core.windows.net/c/x.zip?sv=2020&se=2026-11-23T09:00:00Z&sig=s"
    assert link_expiry(azure) == datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    assert link_expiry("https://itrp.example/exports/x.csv") is None
    assert link_expiry("https://x/?Expires=soon") is None
    with pytest.raises(LinkExpired):
        check_not_expired(v2)
    check_not_expired(v4, now=datetime(2026, 11, 23, 8, 45, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2a00:1450:4001:82b::200e", None),
        ("127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.0.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("240.0.0.1", "a private address"),
    ],
)
def test_address_problems(address, problem):
    assert address_problem(address) == problem


def test_urls_in_messages_hide_signatures():
    shown = display_url("https://s3/x.csv?AWSAccessKeyId=A&Signature=secret123&Expires=1")
    assert "secret123" not in shown and "Signature=***" in shown


def test_content_disposition_names_are_made_safe():
    assert disposition_name('attachment; filename="../../etc/passwd.csv"') == "passwd.csv"
    assert disposition_name("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.zip") == "résumé.zip"
    assert disposition_name("attachment") is None
    assert disposition_name(None) is None


def test_a_failed_write_in_the_background_is_a_download_error(tmp_path):
    from exportmon.download import _BackgroundWriter

    part = tmp_path / "x.part"
    part.write_bytes(b"")
    fd = os.open(part, os.O_RDONLY)  # writing to it fails (EBADF)
    try:
        with pytest.raises(DownloadError, match="cannot write"):  # noqa: SIM117
            with _BackgroundWriter(fd, hashlib.sha256(), part) as writer:
                for _ in range(5):
                    view = writer.free_buffer()
                    view[:3] = b"abc"
                    writer.write(view[:3])
    finally:
        os.close(fd)


# --- downloads that never end, and answers that are not the export -----------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_dripping_a_byte_every_half_second_fails_by_the_minimum_rate(
    chunked, https_server, settings, tmp_path
):
    url = https_server.add(
        "/drip.csv", b"id\n" * 50, delay_per_chunk=0.5, chunk_size=1, chunked=chunked
    )
    slow = dataclasses.replace(settings, timeout=1.0, min_rate=1000, retries=1)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="too slow") as raised:
        download(url, tmp_path, file_name="drip.csv", settings=slow, sleep=no_sleep)
    assert time.monotonic() - started < 6
    assert "gave up after 2 attempts" in raised.value.message


def test_every_download_ends_by_its_deadline_across_attempts(https_server, settings, tmp_path):
    url = https_server.add("/drip.csv", b"id\n" * 50, delay_per_chunk=0.5, chunk_size=1)
    bounded = dataclasses.replace(settings, deadline=2.0, retries=5)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"download\.deadline") as raised:
        download(url, tmp_path, file_name="drip.csv", settings=bounded)
    assert time.monotonic() - started < 4
    assert raised.value.retryable  # a later run may find a faster server


def test_the_deadline_and_minimum_rate_defaults_are_strict():
    from exportmon.config.schema import DownloadConfig

    config = DownloadConfig()
    assert config.deadline == 3600 and config.min_rate == 10_000
    converted = DownloadSettings.from_config(config)
    assert converted.deadline == 3600 and converted.min_rate == 10_000


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "x-gzip, identity"])
def test_an_unrequested_content_coding_is_refused(coding, https_server, settings, tmp_path):
    url = https_server.add(
        "/c.csv", gzip.compress(b"id\n1\n"), headers={"Content-Encoding": coding}
    )
    with pytest.raises(DownloadError, match="Content-Encoding") as raised:
        download(url, tmp_path, file_name="c.csv", settings=settings, sleep=no_sleep)
    assert not raised.value.retryable
    assert len(https_server.requests_for("/c.csv")) == 1
    assert list(tmp_path.iterdir()) == []


SIGN_IN = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>...</body></html>"


@pytest.mark.parametrize(
    ("name", "body", "content_type", "what"),
    [
        ("e.csv", SIGN_IN, "text/html; charset=utf-8", "a web page"),
        ("e.zip", SIGN_IN, "text/html", "a web page"),
        ("e.csv", b'{"error": "link expired"}', "application/json", "a JSON document"),
        (
            "e.csv",
            b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
            "application/xml",
            "an XML document",
        ),
        ("e.csv", b"\n  " + SIGN_IN, "application/octet-stream", "a web page"),
        ("e.zip", b'{"error": "expired"}', "application/zip", "a JSON document"),
        ("e.csv", b"<html><body>please log in</body></html>", "text/csv", "a web page"),
    ],
)
def test_an_answer_that_is_not_the_export_is_refused_naming_the_likely_cause(
    name, body, content_type, what, https_server, settings, tmp_path
):
    url = https_server.add(f"/x/{name}", body, content_type=content_type)
    with pytest.raises(DownloadError) as raised:
        download(url, tmp_path, file_name=name, settings=settings, sleep=no_sleep)
    line = raised.value.one_line()
    assert what in line and name in line
    assert "expired or needs a sign-in" in line
    assert not raised.value.retryable and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "body", "content_type"),
    [
        ("report.html", SIGN_IN, "text/html"),
        ("data.json", b'{"rows": []}', "application/json"),
        ("e.csv", b"id,name\n1,<b>x</b>\n", "text/csv"),
        ("e.csv", b"[id],name\n", "text/plain"),
        ("download", SIGN_IN[:20], "application/octet-stream"),
    ],
)
def test_answers_that_fit_the_expected_file_are_kept(
    name, body, content_type, https_server, settings, tmp_path
):
    url = https_server.add(f"/ok/{name}", body, content_type=content_type)
    result = download(url, tmp_path, file_name=name, settings=settings, sleep=no_sleep)
    assert result.path.read_bytes() == body


def test_a_sign_in_page_for_a_link_named_csv_is_refused_without_a_file_name(
    https_server, settings, tmp_path
):
    url = https_server.add("/exports/export.csv?sig=abc", SIGN_IN, content_type="text/html")
    with pytest.raises(
        DownloadError, match=r"a web page \(text/html\) instead of the export export\.csv"
    ):
        download(url, tmp_path, settings=settings, sleep=no_sleep)
