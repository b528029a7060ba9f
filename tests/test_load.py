"""Many clients at once against the stack as the Procfile runs it: every request answered.

A gevent worker serves each request as a greenlet, so anything a request acquires and
holds while it waits for something else (a pool's second connection, say) parks every
request behind it instead of failing one. These tests fire the bursts that once hung the
API (issue 24: concurrent first submits of a route, each of which asked the workers to
look at the routes again) and hold the stack to an answer for every request and a
finished job for every accepted one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tasks import keys
from tests.support import WebProcess, WorkerProcess, fresh_database, settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The client's patience: a request not answered by then counts as hung.
CLIENT_TIMEOUT = 35


class Stack:
    """`web` with two gevent workers and two Celery workers, on a database of their own."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        self.url = url
        self.redis = client

    def statuses(self, job_ids: list[str]) -> Counter[str]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "status")
        return Counter(str(status) for status in pipe.execute())


@pytest.fixture
def stack(redis_server: Any, tmp_path: Path) -> Iterator[Stack]:
    env = settings_env(fresh_database(redis_server.url), tmp_path / "artifacts")
    processes: list[Any] = [WebProcess(env, tmp_path / "web.log", workers=2)]
    processes += [WorkerProcess(env, tmp_path / f"worker{n}.log") for n in range(2)]
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        for process in processes:
            process.start()
        yield Stack(processes[0].url, client)
    finally:
        for process in processes:
            process.stop()
        client.flushdb()
        client.close()


def burst(url: str, clients: int, each: int) -> list[tuple[int | str, str]]:
    """`clients` threads, released together, each POSTing the same echo job `each` times
    on a connection of its own: (status or the exception's name, job id or '')."""
    start = threading.Barrier(clients)
    answers: list[tuple[int | str, str]] = []
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            session.headers["x-api-key"] = "key-tenant-a"
            start.wait()
            for _ in range(each):
                answer = submit(session, url)
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT * each + 10)
    return answers


def submit(session: requests.Session, url: str) -> tuple[int | str, str]:
    try:
        response = session.post(f"{url}/api/jobs/submit", json={"type": "echo"},
                                timeout=CLIENT_TIMEOUT)
    except requests.RequestException as exc:
        return type(exc).__name__, ""
    job_id = response.json().get("job_id", "") if response.status_code == 200 else ""
    return response.status_code, job_id


def all_finish(stack: Stack, answers: list[tuple[int | str, str]], timeout: float) -> None:
    job_ids = [job_id for _, job_id in answers if job_id]
    wait_for(lambda: stack.statuses(job_ids)["completed"] == len(job_ids), timeout,
             interval=0.5, message=f"{len(job_ids)} jobs to complete")


def test_concurrent_first_submits_of_a_route_are_all_answered(stack: Stack) -> None:
    # Given a web process that has sent no job yet: every submit below is its first of
    # the echo route, and each would ask the workers to look at the routes again
    # When 100 clients submit twice each at the same moment
    answers = burst(stack.url, clients=100, each=2)
    # Then every request is answered 200, and every job completes
    assert Counter(status for status, _ in answers) == {200: 200}
    all_finish(stack, answers, 30)


def test_two_hundred_concurrent_clients_are_all_answered(stack: Stack) -> None:
    # Given a warm stack (one job through it)
    assert burst(stack.url, clients=1, each=1)[0][0] == 200
    # When 200 clients submit twice each at the same moment
    answers = burst(stack.url, clients=200, each=2)
    # Then none times out or gets a 5xx, and every accepted job completes
    assert Counter(status for status, _ in answers) == {200: 400}
    all_finish(stack, answers, 60)
