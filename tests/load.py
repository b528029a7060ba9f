"""Many HTTP clients at once, for tests/test_load.py and benchmarks/submit_load.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

# A client's patience: a request not answered by then counts as hung.
PATIENCE = 35.0


@dataclass
class Tally:
    """What the clients saw: every answer's status (or exception) and latency."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    # The bodies of 5xx answers, for the report.
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: str, seconds: float, job_id: str, body: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(seconds)
            if job_id:
                self.job_ids.append(job_id)
            if status >= "500":
                self.errors[body[:300]] += 1

    @property
    def answered(self) -> int:
        """Requests answered below 500 (a 4xx is an answer; a 5xx or a timeout is not)."""
        return sum(n for s, n in self.statuses.items() if s.isdigit() and s < "500")

    @property
    def unanswered(self) -> int:
        return sum(self.statuses.values()) - self.answered


def hammer(url: str, headers: Mapping[str, str], body: Mapping[str, Any], clients: int, *,
           seconds: float | None = None, each: int | None = None) -> Tally:
    """`clients` threads released together, each on a connection of its own, POSTing
    `body` one request after another: `each` times, or until `seconds` are over."""
    tally, start = Tally(), threading.Barrier(clients)

    def client() -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            start.wait()
            until = time.monotonic() + (seconds or 0)
            sent_count = 0
            while (each is not None and sent_count < each) or \
                    (seconds is not None and time.monotonic() < until):
                sent_count += 1
                post(session, url, body, tally)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    limit = (seconds or 0) + PATIENCE * (each or 1) + 10
    for thread in threads:
        thread.join(limit)
    return tally


def post(session: requests.Session, url: str, body: Mapping[str, Any], tally: Tally) -> None:
    sent = time.monotonic()
    try:
        answer = session.post(url, json=body, timeout=PATIENCE)
    except requests.RequestException as exc:
        tally.add(type(exc).__name__, time.monotonic() - sent, "", "")
        return
    status = str(answer.status_code)
    job_id = answer.json().get("job_id", "") if status == "200" else ""
    tally.add(status, time.monotonic() - sent, job_id, answer.text)
