"""The baseline: plain Celery tasks on the same Redis, with Chordline's transport settings.

`celery -A benchmarks.raw_celery worker` runs it; BENCH_REDIS_URL names the database.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("raw", broker=URL, backend=URL)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue="raw",
                broker_transport_options={"queue_order_strategy": "priority",
                                          "priority_steps": list(range(10)), "sep": ":"})
_client = redis.Redis.from_url(URL, decode_responses=True)


@app.task(name="raw.sleep", ignore_result=True)
def sleep(run: str, index: int, seconds: float) -> None:
    """Sleep, then record when this step finished."""
    time.sleep(seconds)
    _client.hset(f"raw:{run}", str(index), time.time())


@app.task(name="raw.join", ignore_result=True)
def join() -> None:
    """The barrier between two groups, as Chordline's `chordline.join`."""
