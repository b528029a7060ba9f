"""Redis memory per finished job, beside bare Celery's stored result, in one run.

Run with `make bench` (or `python -m benchmarks.footprint --jobs 2000`). It starts its
own Redis on a free port and a Chordline worker (concurrency 2) on database 0, then for
each kind of work submits it, waits until all of it has finished, and reports what
Redis's `used_memory` grew by, per finished job:

1. `echo` one-step jobs, `--jobs` of them;
2. `text-to-image` jobs as a user sends them (a prompt, a size; the preview painter runs
   them, so the record is a real one: parameters, requirements, route, artifacts);
3. five-step `echo` workflows (the workflow's record and its steps'), per workflow;
4. bare Celery (benchmarks/raw_results.py, database 1): a task whose result the Redis
   backend stores, `--jobs` of them.

Redis runs as `make run` starts it (app/embedded_redis.py `TUNING`); `--untuned` measures
Redis's defaults instead. Beside each figure, `MEMORY USAGE` of every key, summed by what
the key is (the job hashes, which hold their events, the global event log of references,
the indexes, the image records, ...), says where the bytes go (used_memory moves by tens
of KB on its own: small counts give noise, the MEMORY USAGE sums do not). Last, the
growth: `used_memory` after `--growth` and twice as many echo jobs, and the extrapolation
to 100,000 that the two slopes justify when they agree.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from app import create_app
from app.embedded_redis import TUNING, RedisServer
from tasks.core import keys
from tasks.core.statuses import JobStatus, WorkflowStatus
from tasks.services import Services
from tests.support import WorkerProcess, overrides_from_env, settings_env, wait_for

TENANT = "tenant-a"
# Redis's own values of what TUNING changes (app/embedded_redis.py), for --untuned.
REDIS_DEFAULTS = {"hash-max-listpack-value": 64, "hash-max-listpack-entries": 128}
TIMEOUT = 600.0
PROMPT = "a red fox in fresh snow at dawn, soft light, 35 mm photograph, shallow depth of field"
# What a key is, by its name: the first pattern that matches names its family.
FAMILIES = [
    ("job hash (and events)", re.compile(r"^chordline:job:[^:]+$")),
    ("job (other)", re.compile(r"^chordline:job:")),
    ("workflow hash", re.compile(r"^chordline:workflow:[^:]+$")),
    ("global event log", re.compile(r"^chordline:events$")),
    ("indexes", re.compile(r"^chordline:(idx|widx):")),
    ("artifacts", re.compile(r"^chordline:artifact")),
    ("metrics", re.compile(r"^chordline:metrics")),
    ("routes", re.compile(r"^chordline:route")),
    ("celery results", re.compile(r"^celery-task-meta-")),
    ("other chordline", re.compile(r"^chordline:")),
]


def family(key: str) -> str:
    return next((name for name, pattern in FAMILIES if pattern.match(key)), "broker and other")


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def by_family(client: redis.Redis) -> Counter[str]:
    """MEMORY USAGE of every key of the client's database, summed by family."""
    sizes: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        sizes[family(str(key))] += int(client.memory_usage(key, samples=0) or 0)
    return sizes


def settle(client: redis.Redis) -> int:
    """used_memory once the allocator has settled (a moment, and a quiet Redis)."""
    time.sleep(1.0)
    return used_memory(client)


class Chordline:
    def __init__(self, server: RedisServer, tmp: Path) -> None:
        base = server.url.rsplit("/", 1)[0]
        self.env = settings_env(f"{base}/0", tmp / "artifacts", CHORDLINE_LOG_LEVEL="WARNING")
        self.app = create_app(overrides_from_env(self.env))
        self.services: Services = self.app.extensions["chordline"]
        self.client = redis.Redis.from_url(f"{base}/0", decode_responses=True)
        self.worker = WorkerProcess(self.env, tmp / "worker.log", concurrency=2, name="bench")

    def jobs(self, count: int, body: dict[str, Any]) -> None:
        done = self._completed()
        for i in range(count):
            request = {"priority": 50, "retries": 0, **body,
                       "parameters": dict(body.get("parameters") or {})}
            self.services.jobs.submit(TENANT, request, f"footprint-{i}")
        self._wait(lambda: self._completed() >= done + count, f"{count} jobs")

    def workflows(self, count: int, steps: int) -> None:
        index = keys.workflow_status_index(TENANT, WorkflowStatus.COMPLETED)
        done = int(self.client.zcard(index))
        for i in range(count):
            self.services.workflows.create(TENANT, {"name": f"chain-{i}", "priority": 50, "steps": [
                {"type": "echo", "parameters": {"value": s}, "retries": 0,
                 "depends_on": [s - 1] if s else []} for s in range(steps)]}, f"footprint-{i}")
        self._wait(lambda: int(self.client.zcard(index)) >= done + count, f"{count} workflows")

    def _completed(self) -> int:
        return int(self.client.zcard(keys.status_index(TENANT, JobStatus.COMPLETED)))

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        wait_for(done, TIMEOUT, interval=0.05, message=what)


def bare_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    """A plain Celery worker with a result backend, ready once it answers a ping."""
    from benchmarks.raw_results import client

    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.raw_results:app", "worker",
         "--pool=prefork", "--concurrency=2", "--without-mingle", "--without-gossip",
         "--loglevel=WARNING"], env={**os.environ, "BENCH_REDIS_URL": url},
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: bool(client.control.ping(timeout=0.5)) or process.poll() is not None,
                 30, message="the bare worker")
    except AssertionError:
        os.killpg(process.pid, signal.SIGKILL)  # never left behind, its pool neither
        raise
    if process.poll() is not None:
        raise RuntimeError(f"the bare worker exited; see {log}")
    return process


def bare_results(url: str, count: int) -> None:
    """`count` tasks whose results Celery stores, all finished."""
    from benchmarks.raw_results import client

    store = redis.Redis.from_url(url, decode_responses=True)
    before = sum(1 for _ in store.scan_iter("celery-task-meta-*", count=1000))
    for i in range(count):
        client.send_task("raw.echo", args=[i], task_id=str(uuid.uuid4()))
    wait_for(lambda: sum(1 for _ in store.scan_iter("celery-task-meta-*", count=1000))
             >= before + count, TIMEOUT, interval=0.2, message="the bare results")


def report(name: str, count: int, grew: int, families: Counter[str]) -> None:
    print(f"\n{name}: {grew / count:,.0f} bytes per finished one ({count} of them; "
          f"used_memory grew by {grew:,})")
    for key_family, size in families.most_common():
        if size > 0:
            print(f"    {key_family:20s} {size / count:8,.0f} B")


def measure(client: redis.Redis, name: str, count: int, run: Callable[[], None]) -> None:
    before, families = settle(client), by_family(client)
    run()
    grew = settle(client) - before
    report(name, count, grew, by_family(client) - families)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="echo jobs, and bare tasks")
    parser.add_argument("--images", type=int, default=300, help="text-to-image jobs")
    parser.add_argument("--workflows", type=int, default=300, help="five-step workflows")
    parser.add_argument("--growth", type=int, default=10_000,
                        help="echo jobs per growth step (two steps)")
    parser.add_argument("--untuned", action="store_true",
                        help="Redis's defaults for what app/embedded_redis.py TUNING sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        if args.untuned:
            for name in TUNING:
                redis.Redis(port=server.port).config_set(name, REDIS_DEFAULTS[name])
        try:
            _bench(server, Path(tmp), args)
        finally:
            server.stop()


def _bench(server: RedisServer, tmp: Path, args: argparse.Namespace) -> None:
    base = server.url.rsplit("/", 1)[0]
    ours = Chordline(server, tmp)
    ours.worker.start()
    try:
        ours.jobs(50, {"type": "echo"})  # the worker, routes and scripts warm
        measure(ours.client, "chordline echo", args.jobs, lambda: ours.jobs(
            args.jobs, {"type": "echo", "parameters": {"value": 1}}))
        measure(ours.client, "chordline text-to-image", args.images, lambda: ours.jobs(
            args.images, {"type": "text-to-image", "prompt": PROMPT,
                          "parameters": {"width": 512, "height": 512}}))
        measure(ours.client, "chordline 5-step workflow", args.workflows,
                lambda: ours.workflows(args.workflows, 5))
        start = settle(ours.client)
        ours.jobs(args.growth, {"type": "echo", "parameters": {"value": 1}})
        first = settle(ours.client)
        ours.jobs(args.growth, {"type": "echo", "parameters": {"value": 1}})
        second = settle(ours.client)
    finally:
        ours.worker.stop()
        ours.app.extensions["event_hub"].stop()
    slopes = ((first - start) / args.growth, (second - first) / args.growth)
    print(f"\ngrowth, echo jobs: +{args.growth:,} -> {first - start:,} B "
          f"({slopes[0]:,.0f} B/job), +{args.growth:,} more -> {second - first:,} B "
          f"({slopes[1]:,.0f} B/job)")
    if abs(slopes[1] - slopes[0]) <= 0.1 * slopes[0]:
        print(f"linear (slopes within 10%): 100,000 finished echo jobs ~ "
              f"{100_000 * sum(slopes) / 2 / 2**20:,.0f} MiB of Redis")
    else:
        print("the two slopes differ by more than 10%: no extrapolation")

    bare_url = f"{base}/1"
    os.environ["BENCH_REDIS_URL"] = bare_url  # before benchmarks.raw_results is imported
    bare = bare_worker(bare_url, tmp / "bare.log")
    try:
        bare_results(bare_url, 50)
        client = redis.Redis.from_url(bare_url, decode_responses=True)
        measure(client, "bare celery, a stored result", args.jobs,
                lambda: bare_results(bare_url, args.jobs))
    finally:
        bare.terminate()
        bare.wait(20)
        from benchmarks.raw_results import app
        from benchmarks.raw_results import client as bare_client

        app.close()
        bare_client.close()


if __name__ == "__main__":
    main()
