"""Many clients at once: Chordline's API beside a bare Flask-and-Celery one, in one run.

Both sides run as the Procfile's `web` line runs (gunicorn, two gevent workers) in front
of two Celery workers on one fresh Redis, and face the same clients: `--clients` threads,
each on a connection of its own, submitting one job after another for `--seconds`, with
a 35 s patience per request. The figure is how many requests are answered, how fast, how
many are not (a timeout or a 5xx, which must be none), and whether every accepted job
ran; the ratio is Chordline's answered requests per second over the bare API's.
`python -m benchmarks.submit_load` (part of `make bench`; about a minute and a half).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from app.embedded_redis import RedisServer, free_port
from benchmarks.raw_throughput import done_key
from benchmarks.throughput import BareWorker
from tasks.core import keys
from tests.load import Tally, hammer
from tests.support import WebProcess, WorkerProcess, settings_env, wait_for


def chordline(server: RedisServer, tmp: Path, args: argparse.Namespace) -> tuple[Tally, int]:
    env = settings_env(server.url.replace("/0", "/1"), tmp / "artifacts")
    web = WebProcess(env, tmp / "web.log", workers=2)
    workers = [WorkerProcess(env, tmp / f"worker{n}.log") for n in range(2)]
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        for process in (web, *workers):
            process.start()
        tally = hammer(f"{web.url}/api/jobs/submit", {"x-api-key": "key-tenant-a"},
                       {"type": "echo"}, args.clients, seconds=args.seconds)
        return tally, finished(lambda: completed(client, tally.job_ids), len(tally.job_ids))
    finally:
        for process in (web, *workers):
            process.stop()


def completed(client: redis.Redis, job_ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "status")
    return sum(status == "completed" for status in pipe.execute())


def bare(server: RedisServer, tmp: Path, args: argparse.Namespace) -> tuple[Tally, int]:
    url = server.url.replace("/0", "/2")
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2",
         "--worker-connections", "2000", "-b", f"127.0.0.1:{port}", "benchmarks.raw_web:app"],
        env={**os.environ, "BENCH_REDIS_URL": url}, stdout=(tmp / "bare-web.log").open("ab"),
        stderr=subprocess.STDOUT, start_new_session=True)
    workers = [BareWorker(url, tmp / f"bare{n}.log", 2) for n in range(2)]
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        wait_for(lambda: serving(f"http://127.0.0.1:{port}/submit"), 30, 0.2, "the bare API")
        client.delete(done_key("load"))
        tally = hammer(f"http://127.0.0.1:{port}/submit", {}, {}, args.clients,
                       seconds=args.seconds)
        return tally, finished(lambda: int(client.hlen(done_key("load"))), len(tally.job_ids))
    finally:
        web.terminate()
        web.wait(20)
        for worker in workers:
            worker.stop()


def serving(url: str) -> bool:
    try:
        return requests.post(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def finished(count: Callable[[], int], accepted: int, patience: float = 120) -> int:
    """How many accepted jobs ran, once all have or `patience` seconds passed."""
    deadline = time.monotonic() + patience
    done = count()
    while done < accepted and time.monotonic() < deadline:
        time.sleep(0.5)
        done = count()
    return int(done)


def row(name: str, tally: Tally, ran: int, seconds: float) -> tuple[str, float]:
    answered = tally.answered
    lat = sorted(tally.latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    rate = answered / seconds
    print(f"{name:10s} {answered:9d} {rate:9.1f} {statistics.median(lat) * 1000:8.0f}"
          f" {p99 * 1000:8.0f} {tally.unanswered:10d} {ran:6d}/{len(tally.job_ids):<6d}"
          f" {dict(tally.statuses)}")
    return name, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            ours, ours_ran = chordline(server, Path(tmp), args)
            theirs, theirs_ran = bare(server, Path(tmp), args)
        finally:
            server.stop()
    print(f"\nsubmit load: {args.clients} clients for {args.seconds:.0f} s, web = gunicorn "
          "with two gevent workers, two Celery workers (concurrency 2), one Redis")
    print(f"{'side':10s} {'answered':>9s} {'per s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
          f" {'unanswered':>10s} {'ran/accepted':>13s} statuses")
    _, ours_rate = row("chordline", ours, ours_ran, args.seconds)
    _, bare_rate = row("bare", theirs, theirs_ran, args.seconds)
    print(f"ratio (chordline / bare answered per second): {ours_rate / bare_rate:.3f}")
    for body, count in ours.errors.items():
        print(f"  {count} x {body}")
    if ours.unanswered or ours_ran < len(ours.job_ids):
        sys.exit("some requests went unanswered or some accepted jobs never ran")


if __name__ == "__main__":
    main()
