"""The plain-queue baseline of benchmarks/fleet_routing.py: one Celery queue, the same GPU slots.

`celery -A benchmarks.raw_fleet worker -c 1` is one GPU slot of BENCH_GPU_GB: it takes
the next job from the single queue, and loads the job's model when its GPU does not
hold it, evicting the least recently used (Chordline's own ModelCache), as a fleet
of plain Celery workers with warm caches but no routing would.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from tasks.fleet.model_cache import ModelCache

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("raw-fleet", broker=URL)
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                worker_prefetch_multiplier=1, task_default_queue="raw-fleet")
_client = redis.Redis.from_url(URL, decode_responses=True)
_cache = ModelCache(float(os.environ.get("BENCH_GPU_GB", "24")), lambda _models: None)


@app.task(name="raw.simulate", ignore_result=True)
def simulate(run: str, index: int, model: str, seconds: float, load_seconds: float,
             vram_gb: int) -> None:
    """Load the model unless warm, work `seconds`, then record when and whether it loaded."""
    got = _cache.acquire(model, vram_gb, lambda: time.sleep(load_seconds))
    time.sleep(seconds)
    _client.hset(f"raw:{run}", str(index), json.dumps({
        "done": time.time(), "loaded": got.loaded, "slot": os.environ.get("BENCH_SLOT")}))
