"""The bare-Celery side of benchmarks/throughput.py: one no-op task on a plain Celery app.

`celery -A benchmarks.raw_throughput worker` runs it; BENCH_REDIS_URL names the database.
The app has Chordline's transport settings (late acks, a prefetch of one, the ten
priority lists on Redis) and nothing else: no result backend (so no result is stored
and no AsyncResult subscribes to a pub/sub channel that could outlive the server), no
task events.
"""

from __future__ import annotations

import os
import time
from functools import cache

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "raw-throughput"
app = Celery("raw_throughput", broker=URL, set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE,
                broker_connection_retry_on_startup=True,
                broker_transport_options={"queue_order_strategy": "priority",
                                          "priority_steps": list(range(10)), "sep": ":",
                                          "polling_interval": 0.25})


@cache
def _client() -> redis.Redis:
    """One client per process (made after the pool forks, on first use)."""
    return redis.Redis.from_url(URL, decode_responses=True)


def done_key(run: str) -> str:
    """The hash a run's tasks write to: index -> "started finished" (epoch seconds)."""
    return f"raw-throughput:{run}"


@app.task(name="raw.noop", ignore_result=True)
def noop(run: str, index: int) -> None:
    """Nothing, then one HSET saying when it started and finished."""
    started = time.time()
    _client().hset(done_key(run), str(index), f"{started} {time.time()}")
