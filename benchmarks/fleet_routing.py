"""Fleet routing: a mixed `simulate` workload through Chordline and through one plain Celery
queue, on the same GPU slots, beside the makespan of a perfect schedule.

Run with `make bench` (or `python -m benchmarks.fleet_routing`). It starts its own Redis,
then four GPU slots twice: as Chordline nodes (one declared GPU each, CHORDLINE_GPUS,
with the models in their catalogs) and as plain Celery workers sharing one queue, each
with a model cache as large as its GPU. Two GPUs hold two models, two hold one. Every
job takes `--seconds`, loading its model takes `--load` more. The perfect schedule
divides the work and the fewest possible loads (every model once, every GPU at least
once) evenly over the GPUs. Goals: Chordline within 1.3x of it, and at least 1.5x
faster than the plain queue.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis

from app import create_app
from app.embedded_redis import RedisServer
from tasks.core.statuses import TERMINAL
from tasks.services import Services
from tests.support import NodeProcess, overrides_from_env, settings_env, write_catalog

SLOTS = {"a10-1": 24, "a10-2": 24, "l4-1": 12, "l4-2": 12}
MODELS = {"m1": 10, "m2": 10, "m3": 12}
MIX = {"m1": 30, "m2": 24, "m3": 18}


def workload(seed: int) -> list[str]:
    models = [m for m, count in MIX.items() for _ in range(count)]
    random.Random(seed).shuffle(models)
    return models


def perfect(jobs: int, seconds: float, load: float) -> float:
    return (jobs * seconds + load * max(len(MODELS), len(SLOTS))) / len(SLOTS)


@dataclass(frozen=True)
class Outcome:
    makespan: float
    # Per job: the GPU slot it ran on, and whether it loaded its model there.
    runs: list[tuple[str, bool]]

    @property
    def loads(self) -> int:
        return sum(loaded for _, loaded in self.runs)

    def per_slot(self) -> str:
        return ", ".join(f"{slot} {sum(s == slot for s, _ in self.runs)} jobs/"
                         f"{sum(s == slot and loaded for s, loaded in self.runs)} loads"
                         for slot in SLOTS)


def run_chordline(url: str, tmp: Path, models: list[str], seconds: float,
                  load: float) -> Outcome:
    env = settings_env(url, tmp / "artifacts", CHORDLINE_LOG_LEVEL="WARNING",
                       CHORDLINE_LEASE_SECONDS="20", CHORDLINE_REAPER_INTERVAL="2",
                       CHORDLINE_HEARTBEAT_INTERVAL="1")
    services: Services = create_app(overrides_from_env(env)).extensions["chordline"]
    catalog = write_catalog(tmp / "models.json", MODELS)
    nodes = [NodeProcess({**env, "CHORDLINE_GPUS": f"GPU:{gb}", "CHORDLINE_MODELS": catalog},
                         tmp / f"{name}.log", name).start() for name, gb in SLOTS.items()]
    try:
        started = time.time()
        ids = [services.jobs.submit("bench", {"type": "simulate", "priority": 50, "retries": 0,
                                              "parameters": {"model": m, "seconds": seconds,
                                                             "load_seconds": load,
                                                             "vram_gb": MODELS[m]}}, "bench").id
               for m in models]
        jobs = _wait_jobs(services, ids)
    finally:
        for node in nodes:
            node.stop()
    finished = max(datetime.fromisoformat(j["completed_at"].replace("Z", "+00:00")).timestamp()
                   for j in jobs)
    return Outcome(finished - started, [(j["machine_id"], bool(j["result"]["loaded"]))
                                        for j in jobs])


def _wait_jobs(services: Services, ids: list[str]) -> list[dict]:
    while True:
        jobs = [services.store.get(i) for i in ids]
        if all(j is not None and j.status in TERMINAL for j in jobs):
            break
        time.sleep(0.1)
    assert all(j.status == "completed" for j in jobs if j), "a job did not complete"
    return [dict(j.fields) for j in jobs if j]


def run_plain(url: str, tmp: Path, models: list[str], seconds: float,
              load: float) -> Outcome:
    os.environ["BENCH_REDIS_URL"] = url
    from benchmarks.raw_fleet import app, simulate

    workers = [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.raw_fleet", "worker",
         "--pool=prefork", "--concurrency=1", "-Q", "raw-fleet", "--without-mingle",
         "--without-gossip", "--loglevel=WARNING", f"--hostname=raw-{name}@%h"],
        env={**os.environ, "BENCH_REDIS_URL": url, "BENCH_GPU_GB": str(gb), "BENCH_SLOT": name},
        stdout=(tmp / f"raw-{name}.log").open("ab"), stderr=subprocess.STDOUT)
        for name, gb in SLOTS.items()]
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5)) < len(SLOTS):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the plain Celery workers did not start; see {tmp}")
        run = uuid.uuid4().hex
        started = time.time()
        for index, model in enumerate(models):
            simulate.delay(run, index, model, seconds, load, MODELS[model])
        while client.hlen(f"raw:{run}") < len(models):
            time.sleep(0.1)
        done = [json.loads(v) for v in client.hvals(f"raw:{run}")]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    return Outcome(max(d["done"] for d in done) - started,
                   [(d["slot"], d["loaded"]) for d in done])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="run time of each job")
    parser.add_argument("--load", type=float, default=3.0, help="time to load a model")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    models = workload(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        base = server.url.rsplit("/", 1)[0]
        try:
            ours = run_chordline(f"{base}/0", Path(tmp), models, args.seconds, args.load)
            plain = run_plain(f"{base}/1", Path(tmp), models, args.seconds, args.load)
        finally:
            server.stop()
    best = perfect(len(models), args.seconds, args.load)
    mix = ", ".join(f"{m} x{n}" for m, n in MIX.items())
    gpus = ", ".join(f"{gb} GB" for gb in SLOTS.values())
    print(f"fleet routing: {len(models)} simulate jobs ({mix}), {args.seconds:g} s each, "
          f"{args.load:g} s to load a model; GPUs: {gpus}")
    print(f"{'':20s} {'makespan':>9s} {'loads':>6s} {'/ perfect':>10s}")
    print(f"{'perfect schedule':20s} {best:8.1f}s {max(len(MODELS), len(SLOTS)):6d} {1:10.2f}")
    for name, outcome in (("Chordline", ours), ("plain Celery queue", plain)):
        print(f"{name:20s} {outcome.makespan:8.1f}s {outcome.loads:6d} "
              f"{outcome.makespan / best:10.2f}   {outcome.per_slot()}")
    print(f"Chordline: {ours.makespan / best:.2f}x the perfect schedule (goal <= 1.3), "
          f"{plain.makespan / ours.makespan:.2f}x faster than the plain queue (goal >= 1.5)")


if __name__ == "__main__":
    main()
