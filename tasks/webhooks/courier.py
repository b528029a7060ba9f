"""The deliverer: posts due webhook deliveries and settles each attempt.

Every worker's main process runs one (a thread, with a small pool of senders),
so deliveries go on while any worker lives, and never take a GPU slot. Many
couriers share the outbox safely: a claim is a lease (tasks/webhooks/store.py).

Each attempt checks the URL again (tasks/webhooks/egress.py: a name may resolve elsewhere
by now) and connects to the one address it checked (pinned: no second lookup,
no DNS rebinding), follows no redirect, gives up on a connection after
`connect_timeout` and on the whole exchange after `timeout`, and reads at most
`MAX_RESPONSE_BYTES` of the answer. A 2xx is delivered. A timeout, connection
error, 429 or 5xx is retried after an exponential backoff with jitter (or the
receiver's Retry-After, when later) until `max_age` from the event has passed;
any other answer, or a forbidden destination, fails the delivery at once.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import redis

from tasks.core.clock import now_ms
from tasks.core.settings import Settings
from tasks.webhooks import egress, signature
from tasks.webhooks.store import AttemptOutcome, Delivery, WebhookStore

log = logging.getLogger(__name__)
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "Chordline-Webhooks/1"
# How often an idle courier looks for due deliveries (seconds): the added latency.
POLL_INTERVAL = 0.5


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are sent and retried (CHORDLINE_WEBHOOK_* settings)."""

    connect_timeout: float
    timeout: float
    retry_base: float
    retry_cap: float
    max_age: float
    allow_hosts: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(settings.webhook_connect_timeout, settings.webhook_timeout,
                   settings.webhook_retry_base, settings.webhook_retry_cap,
                   settings.webhook_max_age, settings.webhook_allow_hosts)

    @property
    def lease(self) -> float:
        """Longer than any attempt can take (the watchdog ends it by connect + timeout), so a
        live attempt is never taken over; a dead deliverer's is, soon after."""
        return self.connect_timeout + self.timeout + 5

    def backoff(self, attempt: int) -> float:
        """Exponential from `retry_base`, capped, with jitter: between half and all of it."""
        full = min(self.retry_cap, self.retry_base * 2 ** (attempt - 1))
        return full * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a status (None when no answer came) or the error."""

    status: int | None = None
    retry_after: float | None = None
    error: str | None = None
    retryable: bool = False


def decide(answer: Answer, attempt: int, created_ms: int, policy: DeliveryPolicy,
           now: int) -> tuple[AttemptOutcome, int]:
    """The attempt's outcome, and when to try again (ms) for a retry."""
    if answer.status is not None and 200 <= answer.status < 300:
        return AttemptOutcome.DELIVERED, 0
    if not answer.retryable:
        return AttemptOutcome.FAILED, 0
    wait = max(policy.backoff(attempt), answer.retry_after or 0.0)
    due = now + int(wait * 1000)
    if due > created_ms + policy.max_age * 1000:
        return AttemptOutcome.FAILED, 0
    return AttemptOutcome.RETRY, due


def classify(status: int, retry_after: str | None) -> Answer:
    if 200 <= status < 300:
        return Answer(status)
    if status == 429 or status >= 500:
        return Answer(status, parse_retry_after(retry_after), f"answered {status}", True)
    if 300 <= status < 400:
        return Answer(status, error=f"answered {status}: redirects are not followed")
    return Answer(status, error=f"answered {status}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds, from either form of Retry-After (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the name would resolve to now."""

    def __init__(self, dest: egress.Destination, connect_timeout: float, **kw: Any) -> None:
        super().__init__(dest.host, dest.port, timeout=connect_timeout, **kw)
        self.address = dest.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address, verified against the URL's host name."""

    def __init__(self, dest: egress.Destination, connect_timeout: float) -> None:
        super().__init__(dest.host, dest.port, timeout=connect_timeout,
                         context=ssl.create_default_context())
        self.address = dest.address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def post(url: str, headers: dict[str, str], body: bytes, policy: DeliveryPolicy) -> Answer:
    """One attempt, under every limit the module docstring lists."""
    try:
        dest = egress.check(url, policy.allow_hosts)
    except egress.Unresolved as exc:  # DNS may answer by the next attempt
        return Answer(error=str(exc), retryable=True)
    except egress.Forbidden as exc:
        return Answer(error=f"not allowed: {exc}")
    parts = urlsplit(url)
    cls = PinnedHTTPSConnection if dest.scheme == "https" else PinnedHTTPConnection
    conn = cls(dest, policy.connect_timeout)
    deadline = policy.connect_timeout + policy.timeout
    # The whole exchange ends by the deadline, however slowly the receiver drips.
    watchdog = Watchdog(conn, deadline)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(policy.timeout)
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        answer = classify(response.status, response.getheader("Retry-After"))
    except (OSError, http.client.HTTPException) as exc:
        answer = Answer(error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
    finally:
        watchdog.cancel()
        conn.close()
    if watchdog.fired:  # what was read before the cut proves nothing
        return Answer(error=f"no whole answer within {deadline:g} s", retryable=True)
    return answer


class Watchdog:
    """Shuts a connection's socket down once its deadline passes."""

    def __init__(self, conn: http.client.HTTPConnection, deadline: float) -> None:
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(deadline, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _cut(self) -> None:
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Courier:
    """Claims due deliveries, posts each on its pool, settles the outcome."""

    def __init__(self, store: WebhookStore, policy: DeliveryPolicy, senders: int,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.policy = policy
        self.senders = senders
        self.poll_interval = poll_interval
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="chordline-webhook")
        self._busy = threading.Semaphore(senders)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chordline-courier",
                                        daemon=True)

    def start(self) -> Courier:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish (or their leases run out)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> int:
        """Claim what the free senders can take; returns how many were claimed."""
        free = 0
        while self._busy.acquire(blocking=False):
            free += 1
        claims = self.store.claim(self.policy.lease, free) if free else []
        for _ in range(free - len(claims)):
            self._busy.release()
        for claim in claims:
            self._pool.submit(self._send, claim)
        return len(claims)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.tick()
            except redis.RedisError as exc:
                log.warning("webhook outbox unavailable: %s", exc)
                claimed = 0
            if not claimed:
                self._stop.wait(self.poll_interval)

    def _send(self, claim: Delivery) -> None:
        try:
            self.deliver(claim)
        except Exception:
            log.exception("webhook %s: attempt %d could not be settled", claim.id, claim.attempt)
        finally:
            self._busy.release()

    def deliver(self, claim: Delivery) -> AttemptOutcome:
        """Post one claimed delivery and settle it (a Redis error leaves the lease to run out)."""
        secrets = self.store.signing_secrets(claim.tenant)
        started = time.monotonic()
        if secrets:
            body = claim.payload.encode()
            headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                       **signature.headers(secrets, claim.id, body)}
            answer = post(claim.url, headers, body, self.policy)
        else:
            answer = Answer(error="the tenant has no webhook signing secret")
        outcome, due = decide(answer, claim.attempt, claim.created_ms, self.policy, now_ms())
        detail = {"status_code": answer.status, "error": answer.error,
                  "duration_ms": round((time.monotonic() - started) * 1000)}
        settled = self.store.settle(claim, outcome, detail, due)
        log.info("webhook %s attempt %d to %s: %s (%s)", claim.id, claim.attempt,
                 urlsplit(claim.url).netloc, outcome, answer.status or answer.error)
        if settled != "settled":
            log.warning("webhook %s attempt %d was %s when settled", claim.id, claim.attempt,
                        settled)
        return outcome
