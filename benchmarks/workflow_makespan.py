"""Makespan / critical path of compiled workflows, beside raw Celery on the same machine.

Run with `make bench` (or `python -m benchmarks.workflow_makespan --seconds 1`). It
starts its own Redis on a free port, a Chordline worker and a raw Celery worker with
enough slots for the widest level, then runs each shape twice: as a Chordline
workflow of `sleep` steps (claim, lease, Lua bookkeeping, canvas from the compiler)
and as the same canvas of bare Celery sleep tasks. 1.00 is ideal.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from app import create_app
from app.embedded_redis import RedisServer
from tasks.services import Services
from tasks.workflows.compiler import plan, to_canvas
from tests.support import WorkerProcess, overrides_from_env, settings_env

Dag = list[list[int]]


def chain(n: int) -> Dag:
    return [[i - 1] if i else [] for i in range(n)]


def diamond(width: int) -> Dag:
    return [[], *([[0]] * width), list(range(1, width + 1))]


def nested_diamonds() -> Dag:
    return [[], [0], [0], [1], [1], [3, 4], [2], [5, 6], [7]]


def fan_in(width: int) -> Dag:
    return [*([[]] * width), list(range(width))]


def n_shape() -> Dag:
    return [[], [], [0, 1], [1], [2, 3]]


def layered(levels: int, width: int, seed: int) -> Dag:
    """Random links between consecutive levels: rarely series-parallel."""
    rng = random.Random(seed)
    dag: Dag = [[] for _ in range(width)]
    for level in range(1, levels):
        previous = range((level - 1) * width, level * width)
        dag += [sorted(rng.sample(previous, 2)) for _ in range(width)]
    return dag


def random_dag(n: int, seed: int) -> Dag:
    rng = random.Random(seed)
    return [sorted(rng.sample(range(i), min(i, rng.randint(0, 2)))) for i in range(n)]


SHAPES: dict[str, Callable[[], Dag]] = {
    "chain-6": lambda: chain(6),
    "diamond-8": lambda: diamond(8),
    "nested-diamonds": nested_diamonds,
    "fan-in-16": lambda: fan_in(16),
    "n-shape": n_shape,
    "layered-4x4": lambda: layered(4, 4, 7),
    "random-16": lambda: random_dag(16, 11),
}


def critical_path(dag: Dag) -> int:
    length: list[int] = []
    for deps in dag:
        length.append(1 + max((length[d] for d in deps), default=0))
    return max(length)


def widest(dag: Dag) -> int:
    level: list[int] = []
    for deps in dag:
        level.append(1 + max((level[d] for d in deps), default=0))
    return max(level.count(k) for k in set(level))


def run_chordline(services: Services, dag: Dag, seconds: float) -> float:
    steps = [{"type": "sleep", "parameters": {"seconds": seconds}, "depends_on": deps,
              "retries": 0} for deps in dag]
    started = time.monotonic()
    workflow = services.workflows.create("bench", {"name": "bench", "priority": 50,
                                                   "steps": steps}, "bench")
    while (w := services.workflow_store.get(workflow.id)) is None or w["status"] in (
            "pending", "running"):
        time.sleep(0.005)
    assert w["status"] == "completed", w.fields
    return time.monotonic() - started


def run_raw(client: redis.Redis, dag: Dag, seconds: float) -> float:
    from benchmarks.raw_celery import join, sleep

    run = uuid.uuid4().hex
    tree = plan(dag).tree
    canvas = to_canvas(tree, lambda i: sleep.si(run, i, seconds).set(ignore_result=True),
                       lambda: join.si().set(ignore_result=True))
    started = time.monotonic()
    canvas.apply_async()
    while client.hlen(f"raw:{run}") < len(dag):
        time.sleep(0.005)
    return time.monotonic() - started


def compile_times() -> dict[str, float]:
    """Milliseconds to plan and build the canvas of 1,000-step DAGs (best of 5)."""
    from celery import Celery

    app = Celery(set_as_current=False)
    step = app.signature("s")
    out = {}
    for name, dag in {"chain-1000": chain(1000), "fan-in-1000": fan_in(999),
                      "random-1000": random_dag(1000, 3),
                      "layered-50x20": layered(50, 20, 3)}.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            to_canvas(plan(dag).tree, lambda i: step.clone(kwargs={"i": i}), step.clone)
            best = min(best, time.perf_counter() - started)
        out[name] = best * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of each step")
    parser.add_argument("--repeat", type=int, default=2, help="runs per shape (median kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            _bench(server, Path(tmp), args.seconds, args.repeat)
        finally:
            _forget_raw_results()
            server.stop()


def _forget_raw_results() -> None:
    """Let go of the raw canvas's results while Redis still runs: each one a result
    backend subscribed to unsubscribes when it is collected, and at exit that would
    find Redis gone (a traceback from the result backend)."""
    from celery.result import AsyncResult

    from benchmarks.raw_celery import app

    gc.collect()
    for result in [o for o in gc.get_objects() if isinstance(o, AsyncResult)]:
        if result.backend is not None:
            result.backend.remove_pending_result(result)
            result.backend = None
    app.close()


def _bench(server: RedisServer, tmp: Path, seconds: float, repeat: int) -> None:
    base = server.url.rsplit("/", 1)[0]
    env = settings_env(f"{base}/0", tmp / "artifacts", CHORDLINE_LOG_LEVEL="WARNING")
    services: Services = create_app(overrides_from_env(env)).extensions["chordline"]
    slots = max(widest(make()) for make in SHAPES.values())
    workers = [WorkerProcess(env, tmp / "chordline.log", concurrency=slots, name="bench").start()]
    raw = _raw_worker(f"{base}/1", tmp / "raw.log", slots)
    raw_client = redis.Redis.from_url(f"{base}/1", decode_responses=True)
    try:
        print(f"steps of {seconds:.2f} s, {slots} worker slots each; makespan / critical path")
        print(f"{'shape':18s} {'steps':>5s} {'cuts':>4s} {'chordline':>9s} {'raw celery':>10s}"
              f" {'ratio':>6s}")
        for name, make in SHAPES.items():
            dag = make()
            ideal = critical_path(dag) * seconds
            ours = statistics.median(run_chordline(services, dag, seconds)
                                     for _ in range(repeat)) / ideal
            base_line = statistics.median(run_raw(raw_client, dag, seconds)
                                          for _ in range(repeat)) / ideal
            print(f"{name:18s} {len(dag):5d} {plan(dag).forced_cuts:4d} {ours:9.3f}"
                  f" {base_line:10.3f} {ours / base_line:6.3f}")
        print("\ncompile (plan + canvas), best of 5:")
        for name, ms in compile_times().items():
            print(f"  {name:16s} {ms:6.1f} ms")
    finally:
        for worker in workers:
            worker.stop()
        raw.terminate()
        raw.wait(20)


def _raw_worker(url: str, log: Path, slots: int) -> subprocess.Popen[bytes]:
    """A plain Celery worker for the baseline, ready when it answers a ping."""
    os.environ["BENCH_REDIS_URL"] = url
    from benchmarks.raw_celery import app

    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.raw_celery", "worker",
         "--pool=prefork", f"--concurrency={slots}", "-Q", "raw", "--without-mingle",
         "--without-gossip", "--loglevel=WARNING"],
        env={**os.environ, "BENCH_REDIS_URL": url}, stdout=log.open("ab"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not app.control.ping(timeout=0.5):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the raw Celery worker did not start; see {log}")
    return process


if __name__ == "__main__":
    main()
