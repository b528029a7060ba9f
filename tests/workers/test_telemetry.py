"""Celery task outcomes, counted per process and added to Redis in batches."""

from __future__ import annotations

import os

import redis

from tasks.core.metrics import CELERY, MetricsStore
from tests.support import wait_for
from workers.telemetry import TaskCounts


def test_counts_reach_redis_within_the_interval(client: redis.Redis) -> None:
    counts = TaskCounts(MetricsStore(client), interval=0.05)
    for _ in range(3):
        counts.count("chordline.run_job", "succeeded")
    counts.count("chordline.run_job", "failed")
    wait_for(lambda: client.hget(CELERY, "chordline.run_job|succeeded") == "3", 5,
             message="the flusher to add the batch")
    assert client.hget(CELERY, "chordline.run_job|failed") == "1"


def test_a_forked_pool_process_does_not_send_its_parents_counts_again(
        client: redis.Redis) -> None:
    counts = TaskCounts(MetricsStore(client), interval=3600)
    counts.count("chordline.run_job", "revoked")  # in the main process, not yet sent
    pid = os.fork()
    if pid == 0:  # the pool process: sends only what it counts itself
        counts.count("chordline.run_job", "started")
        counts.flush()
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    counts.flush()
    assert client.hgetall(CELERY) == {"chordline.run_job|revoked": "1",
                                      "chordline.run_job|started": "1"}
