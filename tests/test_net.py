"""The net/ layer against the real HTTP(S) test server: guarded requests, bodies both ways,
redirects, deadlines, the minimum rate, and retry waits that end on a stop request."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from exportmon.errors import LinkRefused, TLSError
from exportmon.net import retry
from exportmon.net.http import (
    DeadlineExceeded,
    HttpSettings,
    NetworkError,
    TooSlow,
    request,
)
from exportmon.net.tls import client_context
from servers.web import WebServer


@pytest.fixture(autouse=True)
def no_stop_left():
    retry.clear_stop()
    yield
    retry.clear_stop()


@pytest.fixture
def settings(tls_ca):
    return HttpSettings(ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",), timeout=5)


def stop_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, retry.request_stop)
    timer.start()
    return timer


# --- retry policy -------------------------------------------------------------------------


def test_back_off_doubles_with_bounded_jitter_and_a_cap():
    policy = retry.RetryPolicy(first=1.0, cap=10.0, jitter=0.1)
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        for _ in range(50):
            assert base <= policy.delay(failures) <= base * 1.1
    assert policy.delay(10) == 10.0
    assert policy.delay(1, retry_after=3) == 3
    assert policy.delay(1, retry_after=600) == 10.0
    assert not policy.exhausted(3) and policy.exhausted(4)


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    assert retry.parse_retry_after("42") == 42.0
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry.parse_retry_after(later, now=now) == 30.0
    assert retry.parse_retry_after("soon") is None
    assert retry.parse_retry_after(None) is None


def test_call_retries_try_again_then_gives_up_with_the_attempt_count():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        raise retry.TryAgain("down", retry_after=0.5)

    with pytest.raises(RuntimeError, match="down after 3"):
        retry.call(
            flaky,
            retry.RetryPolicy(retries=2),
            give_up=lambda failure, attempts: RuntimeError(f"{failure.message} after {attempts}"),
            sleep=waits.append,
        )
    assert len(calls) == 3 and waits == [0.5, 0.5]


def test_a_stop_request_ends_a_long_wait_at_once():
    timer = stop_after(0.3)
    started = time.monotonic()
    with pytest.raises(retry.Interrupted):
        retry.wait(60)
    timer.join()
    assert time.monotonic() - started < 1.5


def test_a_stop_request_ends_the_back_off_of_call():
    def failing():
        raise retry.TryAgain("503", retry_after=60)

    timer = stop_after(0.3)
    started = time.monotonic()
    with pytest.raises(retry.Interrupted):
        retry.call(failing, retry.RetryPolicy(retries=5), give_up=lambda f, n: RuntimeError())
    timer.join()
    assert time.monotonic() - started < 1.5


def test_backoff_for_reconnects_grows_and_resets():
    backoff = retry.Backoff(retry.RetryPolicy(first=1.0, cap=4.0, jitter=0))
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 1.0


# --- TLS ----------------------------------------------------------------------------------


def test_an_unreadable_ca_file_names_its_key(tmp_path):
    with pytest.raises(TLSError, match=r"download\.ca_file") as raised:
        client_context(tmp_path / "missing.pem", ca_key="download.ca_file")
    assert not raised.value.retryable


def test_an_untrusted_certificate_names_the_ca_key(https_server):
    url = https_server.add("/x", b"x")
    with pytest.raises(TLSError, match="not trusted") as raised:
        request("GET", url, settings=HttpSettings(allow_hosts=("127.0.0.1",), ca_key="my.ca"))
    assert "my.ca" in raised.value.one_line()


# --- requests -------------------------------------------------------------------------------


def test_get_streams_the_answer(https_server, settings):
    url = https_server.add("/a.csv", b"id\n" * 100_000)
    with request("GET", url, settings=settings) as response:
        assert response.status == 200 and response.length == 300_000
        buffer = bytearray(65536)
        total = 0
        while count := response.readinto(buffer):
            total += count
    assert total == 300_000
    (seen,) = https_server.requests_for("/a.csv")
    assert seen.headers["Accept-Encoding"] == "identity"


def test_error_statuses_are_answers_not_exceptions(https_server, settings):
    url = https_server.add("/missing", b'{"error": "gone"}', status=410)
    with request("GET", url, settings=settings) as response:
        assert response.status == 410
        assert response.json() == {"error": "gone"}


def test_loopback_is_refused_unless_allowed(https_server, tls_ca):
    url = https_server.add("/x", b"x")
    with pytest.raises(LinkRefused, match="loopback") as raised:
        request("GET", url, settings=HttpSettings(ca_file=str(tls_ca.ca_file), allow_key="x.allow"))
    assert "x.allow" in raised.value.one_line()
    assert https_server.requests_for("/x") == []


@pytest.mark.parametrize("kind", ["bytes", "path", "file", "pipe"])
def test_a_request_body_is_streamed_from_bytes_a_file_or_a_pipe(
    kind, https_server, settings, tmp_path
):
    data = os.urandom(700_000)
    source = tmp_path / "body.bin"
    source.write_bytes(data)
    body: object
    if kind == "bytes":
        body = data
    elif kind == "path":
        body = source
    elif kind == "file":
        body = source.open("rb")
    else:
        read, write = os.pipe()
        threading.Thread(target=lambda: (os.write(write, data), os.close(write))).start()
        body = open(read, "rb")  # noqa: SIM115 (closed by the request)
    url = https_server.add("/upload", b"ok", status=201)
    with request("PUT", url, body=body, settings=settings) as response:  # type: ignore[arg-type]
        assert response.status == 201 and response.read(100) == b"ok"
    (seen,) = https_server.requests_for("/upload")
    assert seen.method == "PUT" and seen.body == data
    if kind == "pipe":
        assert seen.headers["Transfer-Encoding"] == "chunked"
    else:
        assert seen.headers["Content-Length"] == str(len(data))


def test_307_repeats_the_post_and_303_turns_it_into_a_get(https_server, settings):
    https_server.add("/done", b"done")
    https_server.add("/final", b"stored", status=201)
    first = https_server.add("/post", redirect_to=https_server.url("/final"), redirect_status=307)
    with request("POST", first, body=b"payload", settings=settings) as response:
        assert response.status == 201 and response.redirects == 1
    assert https_server.requests_for("/final")[0].body == b"payload"
    other = https_server.add("/post2", redirect_to=https_server.url("/done"), redirect_status=303)
    with request("POST", other, body=b"payload", settings=settings) as response:
        assert response.read(10) == b"done"
    (seen,) = https_server.requests_for("/done")
    assert seen.method == "GET" and seen.body == b""


def test_credentials_are_not_sent_to_another_origin(https_server, tls_ca, settings):
    with WebServer(tls_ca.server) as other:
        target = other.add("/elsewhere", b"x")
        url = https_server.add("/go", redirect_to=target)
        headers = {"Authorization": "Bearer s3cret-token", "X-Keep": "1"}
        with request("GET", url, headers=headers, settings=settings):
            pass
        (seen,) = other.requests_for("/elsewhere")
        assert "Authorization" not in seen.headers and seen.headers["X-Keep"] == "1"
    (first,) = https_server.requests_for("/go")
    assert first.headers["Authorization"] == "Bearer s3cret-token"


def test_a_redirect_to_plain_http_or_a_refused_host_is_not_followed(https_server, settings):
    url = https_server.add("/down", redirect_to="http://127.0.0.1:1/x")
    with pytest.raises(LinkRefused, match="plain http"):
        request("GET", url, settings=settings)
    url = https_server.add("/meta", redirect_to="https://169.254.169.254/latest")
    with pytest.raises(LinkRefused, match="metadata"):
        request("GET", url, settings=settings)


def test_check_url_sees_every_hop(https_server, settings):
    seen = []
    https_server.add("/b", b"b")
    url = https_server.add("/a", redirect_to=https_server.url("/b"))
    with request("GET", url, settings=settings, check_url=seen.append):
        pass
    assert [u.rsplit("/", 1)[1] for u in seen] == ["a", "b"]


# --- time limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_a_dripping_body_trips_the_minimum_rate(chunked, https_server, tls_ca):
    url = https_server.add(
        "/drip.csv", b"x" * 100, delay_per_chunk=0.5, chunk_size=1, chunked=chunked
    )
    settings = HttpSettings(
        ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",), timeout=1.5, min_rate=100
    )
    started = time.monotonic()
    with request("GET", url, settings=settings) as response, pytest.raises(TooSlow):
        response.read(1000)
    assert time.monotonic() - started < 4


def test_a_dripping_body_trips_the_deadline(https_server, tls_ca, settings):
    url = https_server.add("/drip", b"x" * 100, delay_per_chunk=0.5, chunk_size=1)
    started = time.monotonic()
    with (
        request("GET", url, settings=settings, deadline=time.monotonic() + 1.5) as response,
        pytest.raises(DeadlineExceeded),
    ):
        response.read(1000)
    assert time.monotonic() - started < 3


def test_a_silent_server_times_out(https_server, tls_ca):
    url = https_server.add("/stall", b"x" * 100, stall=True)
    settings = HttpSettings(ca_file=str(tls_ca.ca_file), allow_hosts=("127.0.0.1",), timeout=1)
    with request("GET", url, settings=settings) as response, pytest.raises(NetworkError):
        response.read(1000)


def test_a_stop_request_ends_a_stalled_transfer(https_server, settings):
    url = https_server.add("/stall", b"x" * 100, stall=True, stall_after=10)
    started = time.monotonic()
    with request("GET", url, settings=HttpSettings(**{**settings.__dict__, "timeout": 60})) as r:
        timer = stop_after(0.3)
        with pytest.raises(retry.Interrupted):
            r.read(1000)
        timer.join()
    assert time.monotonic() - started < 2
