"""Event latency from a worker's state change to a WebSocket client, beside raw Redis pub/sub.

Run with `make bench-events` (or `python -m benchmarks.event_latency --sockets 1000`).
It starts its own Redis on a free port and one API process as production runs it
(gunicorn, one gevent worker), creates one single-step workflow per socket, and
claims each step as a worker would. Then, acting as the workers, it reports
progress on every step (`Lifecycle.heartbeat`, the Lua script that records the
progress and emits `job.progress`) and times each event until the socket
subscribed to that workflow receives it. The same pacing and a payload of the
same size go through bare Redis PUBLISH to one bare subscriber for the baseline.
Clients run in a separate asyncio process (benchmarks/ws_swarm.py); both sides
read the same machine clock.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import redis
import requests

from app import create_app
from app.embedded_redis import RedisServer
from tasks.services import Services
from tests.support import ROOT, overrides_from_env, settings_env, wait_for

KEY = "bench-key-0001"
PAYLOAD = "x" * 300  # about the size of a job.progress event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Api:
    """gunicorn with one gevent worker: one API process, as the Procfile runs it."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:app.gunicorn_conf",
             "app:create_app()"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **env, "WEB_CONCURRENCY": "1", "WEB_BIND": f"127.0.0.1:{port}"})
        wait_for(self._healthy, 30, interval=0.2, message="the API")

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=1).ok
        except requests.RequestException:
            return False

    @property
    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(children.read_text().split()[0])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


class Swarm:
    def __init__(self, args: list[str], tmp: Path) -> None:
        self.out = tmp / f"receipts-{uuid.uuid4().hex}.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ws_swarm", *args, str(self.out)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "READY", f"swarm did not start: {line!r}"

    def finish(self) -> object:
        time.sleep(0.5)  # the last events in flight
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)
        return json.loads(self.out.read_text())


def create_workflows(api_url: str, count: int) -> dict[str, str]:
    """Workflow id → its step's job id."""
    session = requests.Session()
    session.headers["x-api-key"] = KEY
    body = {"name": "bench", "steps": [{"type": "echo", "parameters": {"value": 1}}]}

    def one(_: int) -> tuple[str, str]:
        answer = session.post(api_url + "/api/workflows", json=body, timeout=30).json()
        return answer["workflow_id"], answer["job_ids"][0]

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(count)))


def drive_progress(services: Services, jobs: list[str], rounds: int,
                   rate: float) -> dict[str, int]:
    """Report progress 1..rounds on every job at `rate` events per second in all."""
    tokens = {}
    for job_id in jobs:
        token = uuid.uuid4().hex
        claim = services.lifecycle.claim(job_id, token, "bench-worker", "bench", 2**62)
        assert claim.outcome == "claimed", claim
        tokens[job_id] = token
    sent: dict[str, int] = {}
    interval = 1 / rate
    next_at = time.perf_counter()
    for progress in range(1, rounds + 1):
        for job_id in jobs:
            next_at += interval
            if (delay := next_at - time.perf_counter()) > 0:
                time.sleep(delay)
            sent[f"{job_id}:{progress}"] = time.time_ns()
            services.lifecycle.heartbeat(job_id, tokens[job_id], renew=False, progress=progress)
    return sent


def drive_raw(client: redis.Redis, count: int, rate: float) -> None:
    interval = 1 / rate
    next_at = time.perf_counter()
    for _ in range(count):
        next_at += interval
        if (delay := next_at - time.perf_counter()) > 0:
            time.sleep(delay)
        client.publish("bench:raw", json.dumps({"t0": time.time_ns(), "pad": PAYLOAD}))


def measure_ws(api: Api, services: Services, tmp: Path, sockets: int, rounds: int,
               rate: float) -> tuple[list[float], int, float]:
    workflows = create_workflows(api.url, sockets)
    ids_file = tmp / f"ids-{sockets}.json"
    ids_file.write_text(json.dumps(list(workflows)))
    swarm = Swarm(["ws", api.url, KEY, str(ids_file)], tmp)
    rss = rss_mb(api.worker_pid)
    sent = drive_progress(services, list(workflows.values()), rounds, rate)
    received = swarm.finish()
    assert isinstance(received, dict)
    latencies = [(received[k] - t0) / 1e6 for k, t0 in sent.items() if k in received]
    return latencies, len(sent), rss


def measure_raw(redis_url: str, tmp: Path, count: int, rate: float) -> list[float]:
    swarm = Swarm(["raw", redis_url, "bench:raw"], tmp)
    client = redis.Redis.from_url(redis_url)
    drive_raw(client, count, rate)
    latencies = swarm.finish()
    assert isinstance(latencies, list)
    return [ns / 1e6 for ns in latencies]


def row(label: str, latencies: list[float], expected: int) -> str:
    p50, p99, worst = percentiles(latencies)
    return (f"{label:<44} {p50:8.2f} {p99:8.2f} {worst:8.2f}   "
            f"{len(latencies)}/{expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="progress events per socket")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second in all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = RedisServer(tmp / "redis").start()
        # One tenant holds every socket here: its WebSocket quota must allow them all.
        env = settings_env(server.url, tmp / "artifacts", CHORDLINE_API_KEYS=f"{KEY}=bench",
                           CHORDLINE_LOG_LEVEL="WARNING",
                           CHORDLINE_QUOTA_WEBSOCKETS=str(args.sockets + 10))
        services: Services = create_app(overrides_from_env(env)).extensions["chordline"]
        api = Api(env, (tmp / "api.log").open("wb"))
        try:
            idle_rss = rss_mb(api.worker_pid)
            single_ws, single_n, _ = measure_ws(api, services, tmp, 1, 300, 100.0)
            single_raw = measure_raw(server.url, tmp, 300, 100.0)
            many_ws, many_n, _ = measure_ws(api, services, tmp, args.sockets, args.rounds,
                                            args.rate)
            held_rss = rss_mb(api.worker_pid)
            many_raw = measure_raw(server.url, tmp, args.sockets * args.rounds, args.rate)
        finally:
            api.stop()
            server.stop()
    print(f"\nEvent latency, state change to client, ms ({os.cpu_count()} CPUs)")
    print(f"{'':<44} {'p50':>8} {'p99':>8} {'max':>8}   received")
    print(row("raw Redis pub/sub, 100 msg/s", single_raw, 300))
    print(row("Chordline /ws, 1 socket, 100 events/s", single_ws, single_n))
    print(row(f"raw Redis pub/sub, {args.rate:.0f} msg/s", many_raw, args.sockets * args.rounds))
    print(row(f"Chordline /ws, {args.sockets} sockets, {args.rate:.0f} events/s", many_ws,
              many_n))
    print(f"\nOne API process held {args.sockets} sockets (+1); its RSS went from "
          f"{idle_rss:.0f} MB to {held_rss:.0f} MB "
          f"({(held_rss - idle_rss) * 1024 / args.sockets:.0f} KB per socket).")


if __name__ == "__main__":
    main()
