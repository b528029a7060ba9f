"""Many clients at once against the stack as the Procfile runs it: every request answered.

A gevent worker serves each request as a greenlet, so anything a request acquires and
holds while it waits for something else (a pool's second connection, say) parks every
request behind it instead of failing one. These tests fire the bursts that once hung the
API (issue 24: concurrent first submits of a route, each of which asked the workers to
look at the routes again) and hold the stack to an answer for every request and a
finished job for every accepted one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tasks.core import keys
from tests.load import Tally, hammer
from tests.support import WebProcess, WorkerProcess, fresh_database, settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADERS = {"x-api-key": "key-tenant-a"}
ECHO = {"type": "echo"}


class Stack:
    """`web` with two gevent workers and two Celery workers, on a database of their own."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        self.submit_url = f"{url}/api/jobs/submit"
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


def all_finish(stack: Stack, tally: Tally, timeout: float) -> None:
    job_ids = tally.job_ids
    wait_for(lambda: stack.statuses(job_ids)["completed"] == len(job_ids), timeout,
             interval=0.5, message=f"{len(job_ids)} jobs to complete")


def test_concurrent_first_submits_of_a_route_are_all_answered(stack: Stack) -> None:
    # Given a web process that has sent no job yet: every submit below is its first of
    # the echo route, and each would ask the workers to look at the routes again
    # When 100 clients submit twice each at the same moment
    tally = hammer(stack.submit_url, HEADERS, ECHO, clients=100, each=2)
    # Then every request is answered 200, and every job completes
    assert tally.statuses == {"200": 200}, tally.errors
    all_finish(stack, tally, 30)


def test_two_hundred_concurrent_clients_are_all_answered(stack: Stack) -> None:
    # Given a warm stack (one job through it)
    assert hammer(stack.submit_url, HEADERS, ECHO, clients=1, each=1).statuses == {"200": 1}
    # When 200 clients submit one job after another for five seconds (more at once than
    # a process keeps connections to Redis)
    tally = hammer(stack.submit_url, HEADERS, ECHO, clients=200, seconds=5)
    # Then none times out or gets a 5xx, and every accepted job completes
    assert tally.unanswered == 0 and tally.answered >= 200, (tally.statuses, tally.errors)
    all_finish(stack, tally, 90)
