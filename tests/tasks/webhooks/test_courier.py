"""One delivery attempt under its limits, and what the courier does with the answer."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tasks.webhooks import egress
from tasks.webhooks.courier import (
    MAX_RESPONSE_BYTES,
    Answer,
    DeliveryPolicy,
    PinnedHTTPConnection,
    classify,
    decide,
    parse_retry_after,
    post,
)
from tasks.webhooks.store import AttemptOutcome

POLICY = DeliveryPolicy(connect_timeout=1, timeout=1, retry_base=1, retry_cap=8,
                        max_age=60, allow_hosts=("127.0.0.1",))
Behaviour = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], str]]:
    """Start a loopback server whose every POST runs `behaviour`; returns its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                behaviour(self)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_port}/in"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes = b"", **headers: str) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):  # the courier stops reading after a few KiB
            handler.wfile.write(body)
    return behaviour


def test_a_large_answer_is_not_read_past_a_few_kib(serve: Callable[[Behaviour], str]) -> None:
    url = serve(answer(200, b"x" * (8 << 20)))
    started = time.monotonic()
    assert post(url, {}, b"{}", POLICY) == Answer(200)
    assert time.monotonic() - started < 1 and MAX_RESPONSE_BYTES <= 4096


def test_a_receiver_that_hangs_is_cut_off_by_the_timeout(
        serve: Callable[[Behaviour], str]) -> None:
    url = serve(lambda handler: time.sleep(3))
    started = time.monotonic()
    got = post(url, {}, b"{}", POLICY)
    assert got.retryable and got.status is None and "timed out" in (got.error or "")
    assert time.monotonic() - started < 2.5


def test_a_slow_drip_is_cut_off_by_the_whole_exchange_deadline(
        serve: Callable[[Behaviour], str]) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):  # the courier hangs up on it
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(40):  # a header line every 0.1 s, each under the read timeout
                handler.wfile.write(b"x-drip: 1\r\n")
                handler.wfile.flush()
                time.sleep(0.1)

    started = time.monotonic()
    got = post(serve(drip), {}, b"{}", POLICY)
    assert got.retryable and time.monotonic() - started < 2.8


def test_a_connection_is_made_to_the_checked_address_not_the_name(
        serve: Callable[[Behaviour], str]) -> None:
    seen: list[str] = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers["host"])
        answer(204)(handler)

    port = int(serve(record).rsplit(":", 1)[1].split("/")[0])
    pinned = egress.Destination("http", "rebinding.example", port, "127.0.0.1")
    conn = PinnedHTTPConnection(pinned, 1)
    conn.request("POST", "/in", body=b"{}")
    assert conn.getresponse().status == 204
    assert seen == [f"rebinding.example:{port}"]


def test_a_forbidden_destination_fails_without_a_request(
        serve: Callable[[Behaviour], str]) -> None:
    url = serve(answer(200))
    closed = DeliveryPolicy(1, 1, 1, 8, 60, allow_hosts=())
    got = post(url, {}, b"{}", closed)
    assert not got.retryable and "loopback" in (got.error or "")


@pytest.mark.parametrize("status, retryable", [
    (200, False), (204, False), (301, False), (400, False), (404, False), (410, False),
    (429, True), (500, True), (503, True)])
def test_which_answers_are_retried(status: int, retryable: bool) -> None:
    assert classify(status, None).retryable is retryable


def test_retry_after_is_read_in_both_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # long past
    assert 50 < (parse_retry_after(time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) or 0) <= 60
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    for attempt, full in ((1, 1), (2, 2), (3, 4), (4, 8), (9, 8)):
        waits = [POLICY.backoff(attempt) for _ in range(50)]
        assert all(full / 2 <= w <= full for w in waits) and len(set(waits)) > 1


def test_a_retry_past_the_maximum_age_fails_the_delivery() -> None:
    now = 1_000_000
    retry = Answer(503, retryable=True)
    assert decide(retry, 1, now, POLICY, now)[0] == AttemptOutcome.RETRY
    outcome, due = decide(Answer(429, 30, retryable=True), 1, now, POLICY, now)
    assert outcome == AttemptOutcome.RETRY and due >= now + 30_000  # Retry-After beats the backoff
    assert decide(retry, 5, now, POLICY, now + 59_000)[0] == AttemptOutcome.FAILED
    assert decide(Answer(404), 1, now, POLICY, now) == (AttemptOutcome.FAILED, 0)
    assert decide(Answer(200), 1, now, POLICY, now) == (AttemptOutcome.DELIVERED, 0)


def test_tls_is_verified_against_the_urls_host(tmp_path: Path) -> None:
    """A receiver whose certificate no authority signed is not trusted (no verify=False)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = post(f"https://127.0.0.1:{server.server_port}/in", {}, b"{}", POLICY)
    finally:
        server.shutdown()
        server.server_close()
    assert got.status is None and "CERTIFICATE_VERIFY_FAILED" in (got.error or "")
