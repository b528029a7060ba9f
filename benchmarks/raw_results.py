"""The bare-Celery side of benchmarks/footprint.py: a task whose result Celery stores.

`celery -A benchmarks.raw_results worker` runs it; BENCH_REDIS_URL names the database.
The worker's app has a Redis result backend, so each finished task leaves its
`celery-task-meta-<id>` key; `client` has none, so that sending a task subscribes to
nothing (the result is stored all the same: the message does not ask to ignore it).
"""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "raw-results"
SETTINGS = {"task_serializer": "json", "accept_content": ["json"], "result_serializer": "json",
            "task_acks_late": True, "worker_prefetch_multiplier": 1,
            "task_default_queue": QUEUE, "broker_connection_retry_on_startup": True}
app = Celery("raw_results", broker=URL, backend=URL, set_as_current=False)
app.conf.update(SETTINGS)
client = Celery("raw_results_client", broker=URL, set_as_current=False)
client.conf.update(SETTINGS)


@app.task(name="raw.echo")
def echo(value: int) -> dict[str, int]:
    """Return what it was given, as Chordline's `echo` job does; Celery stores it."""
    return {"value": value}
