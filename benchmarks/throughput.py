"""Job throughput of Chordline beside bare Celery on the same Redis, in one run.

Run with `make bench` (or `python -m benchmarks.throughput --jobs 300`). It starts its
own Redis on a free port; Chordline uses database 0, bare Celery (benchmarks/
raw_throughput.py: a no-op task that writes one key, late acks, a prefetch of one)
database 1. Each side runs alone, in turns: `--rounds` rounds (3) of Chordline's processes
then bare Celery's, each side's median kept.

1. submit: `--threads` client threads submit `--jobs` one-step `echo` jobs over HTTP
   (a keep-alive session each) to the Procfile's `web` process (gunicorn, gevent,
   `--web-concurrency` workers); bare: `delay()` of the no-op task from as many threads.
   No worker runs yet, so this also fills the queue for:
2. drain: one worker (prefork, concurrency 2) starts and empties the queue; the time is
   from the first job starting to the last finishing (the job records' `started_at`
   and `completed_at`; the bare task's own timestamps).
3. end to end: `--e2e-jobs` jobs submitted as in 1 with the worker running, timed from
   the first submit until the last job has finished.
4. per-step overhead: the makespan of a `--chain-steps` linear workflow of `echo` steps
   (bare: a Celery chain of no-op tasks), divided by its steps.
5. chain message bytes: linear workflows of 10 to 1,000 `echo` steps, run for real under
   MONITOR ("seen": the LPUSHes onto the queues' lists, i.e. the broker messages, and
   the arguments of every command sent), beside the same figure computed without
   sending anything ("canvas": the compiled canvas applied with kombu's Redis channel
   captured, then for each message what a worker does when its task succeeds, per
   celery.app.trace and the Redis result backend, and likewise each parked segment)
   and a bare Celery chain of as many no-op tasks (computed the same way).

The ratio column is chordline / bare throughput (bare time / chordline time): 1.0 is
parity, the goal is 0.8 or more. `--profile DIR` reports, for the submit and drain
phases of both sides, the CPU per job of each process and Redis's time per command and
script, and samples Chordline's web workers (submit) and worker (drain) with py-spy
(the numbers then suffer); `--monitor` lists the Redis commands of one submit and of
one job run, on each side.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import redis
import requests
from celery import Celery, group, signature
from celery.canvas import Signature, maybe_signature

from app import create_app
from app.embedded_redis import RedisServer
from tasks.core import keys
from tasks.core.clock import parse_iso
from tasks.core.scripts import Scripts
from tasks.core.statuses import JobStatus
from tasks.jobs.dispatch import StepCall
from tasks.services import Services
from tasks.workflows.compiler import plan
from tests.support import WebProcess, WorkerProcess, overrides_from_env, settings_env, wait_for

# One tenant per kind of load, so that a status index counts exactly one load's jobs.
TENANTS = ("bench-drain", "bench-e2e", "bench-warm", "bench-chain")
API_KEYS = ",".join(f"key-{t}={t}" for t in TENANTS)
CHAIN_LENGTHS = (10, 100, 200, 1000)
WARMUP_PER_THREAD = 2
TIMEOUT = 180.0


@dataclass
class Row:
    """One measured quantity for both sides; `higher` says whether more is better."""

    name: str
    unit: str
    chordline: float
    bare: float
    higher: bool = True

    @property
    def ratio(self) -> float:
        """Chordline's speed as a fraction of bare Celery's."""
        if self.higher:
            return self.chordline / self.bare if self.bare else float("nan")
        return self.bare / self.chordline if self.chordline else float("nan")


# --- load -----------------------------------------------------------------------------

Call = Callable[[int], str]


class Load:
    """`count` calls spread over `threads` threads. Each thread builds its own caller
    (a session, a warm-up) before the clock starts; `start` returns once all are ready
    and released, `join` once every call returned."""

    def __init__(self, count: int, threads: int, make: Callable[[], Call]) -> None:
        self.count, self.threads, self._make = count, threads, make
        self.results: list[list[str]] = [[] for _ in range(threads)]
        self.errors: list[BaseException] = []
        self._ready = threading.Barrier(threads + 1)
        self._go = threading.Event()
        self._workers = [threading.Thread(target=self._work, args=(k,), daemon=True)
                         for k in range(threads)]
        self.started = self.elapsed = 0.0

    def _work(self, k: int) -> None:
        try:
            call = self._make()
        except Exception as exc:  # noqa: BLE001 (start and join raise it)
            self.errors.append(exc)
            self._ready.abort()
            return
        self._ready.wait()
        self._go.wait()
        try:
            for i in range(k, self.count, self.threads):
                self.results[k].append(call(i))
        except Exception as exc:  # noqa: BLE001 (start and join raise it)
            self.errors.append(exc)

    def start(self, settle: Callable[[], None] = lambda: None) -> Load:
        for worker in self._workers:
            worker.start()
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a load thread failed to start: {self.errors!r}") from None
        settle()
        self.started = time.monotonic()
        self._go.set()
        return self

    def join(self) -> Load:
        for worker in self._workers:
            worker.join()
        self.elapsed = time.monotonic() - self.started
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} calls failed, first: {self.errors[0]!r}")
        return self

    @property
    def ids(self) -> list[str]:
        return [i for part in self.results for i in part]


def http_submitter(url: str, key: str, warm_key: str,
                   sessions: list[Any]) -> Callable[[], Call]:
    """A keep-alive connection per thread; its warm-up submits go to the warm-up tenant.

    The client is `http.client`, not requests: the load runs on the same two cores as
    the server, and requests' own ~0.5 ms a call would be counted against the API.
    """
    parsed = urlsplit(url)

    def make() -> Call:
        connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port,
                                                timeout=30)
        sessions.append(connection)

        def submit(i: int, tenant_key: str = key) -> str:
            body = json.dumps({"type": "echo", "parameters": {"value": i}})
            connection.request("POST", "/api/jobs/submit", body=body, headers={
                "x-api-key": tenant_key, "content-type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            if response.status != 200:
                raise RuntimeError(f"submit answered {response.status}: {text!r}")
            return str(json.loads(text)["job_id"])

        for i in range(WARMUP_PER_THREAD):
            submit(i, warm_key)
        return submit

    return make


def celery_submitter(run: str) -> Callable[[], Call]:
    from benchmarks.raw_throughput import noop

    def make() -> Call:
        for i in range(WARMUP_PER_THREAD):
            noop.delay(f"{run}-warm", i)
        return lambda i: str(noop.delay(run, i).id)

    return make


# --- Chordline side -------------------------------------------------------------------


def completed(client: redis.Redis, tenant: str) -> int:
    return int(client.zcard(keys.status_index(tenant, JobStatus.COMPLETED)))


def failures(client: redis.Redis, tenant: str) -> int:
    return sum(int(client.zcard(keys.status_index(tenant, s)))
               for s in (JobStatus.FAILED, JobStatus.CANCELLED))


def wait_completed(client: redis.Redis, tenant: str, count: int, what: str,
                   load: Load | None = None) -> None:
    def done() -> bool:
        if failures(client, tenant):
            raise RuntimeError(f"{what}: jobs of {tenant} failed")
        if load is not None and load.errors:
            raise RuntimeError(f"{what}: {load.errors[0]!r}")
        return completed(client, tenant) >= count
    wait_for(done, TIMEOUT, interval=0.01, message=what)


def job_span(client: redis.Redis, job_ids: list[str]) -> float:
    """Seconds from the first job's start to the last job's completion."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), "started_at", "completed_at", "status")
    rows = pipe.execute()
    wrong = [r for r in rows if r[2] != JobStatus.COMPLETED]
    if wrong:
        raise RuntimeError(f"{len(wrong)} jobs did not complete: {wrong[:3]}")
    return (max(parse_iso(r[1]) for r in rows) - min(parse_iso(r[0]) for r in rows)) / 1000


def chordline_chain(services: Services, steps: int) -> float:
    """Seconds from creating a linear workflow of `echo` steps until it completed."""
    body = {"name": "bench-chain", "priority": 50, "steps": [
        {"type": "echo", "parameters": {"value": i}, "depends_on": [i - 1] if i else [],
         "retries": 0} for i in range(steps)]}
    started = time.monotonic()
    workflow = services.workflows.create("bench-chain", body, "bench")
    while (w := services.workflow_store.get(workflow.id)) is None or w["status"] in (
            "pending", "running"):
        if time.monotonic() - started > TIMEOUT:
            raise RuntimeError("the workflow did not finish")
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    if w["status"] != "completed":
        raise RuntimeError(f"the workflow ended {w['status']}")
    return elapsed


# --- bare Celery side -----------------------------------------------------------------


def bare_span(client: redis.Redis, run: str) -> float:
    from benchmarks.raw_throughput import done_key

    times = [tuple(map(float, v.split())) for v in client.hvals(done_key(run))]
    return max(t[1] for t in times) - min(t[0] for t in times)


def bare_done(client: redis.Redis, run: str) -> int:
    from benchmarks.raw_throughput import done_key

    return int(client.hlen(done_key(run)))


def bare_chain(client: redis.Redis, steps: int) -> float:
    from celery import chain

    from benchmarks.raw_throughput import noop

    run = uuid.uuid4().hex
    canvas = chain(noop.si(run, i) for i in range(steps))
    started = time.monotonic()
    canvas.apply_async()
    wait_for(lambda: bare_done(client, run) >= steps, TIMEOUT, interval=0.002,
             message="the bare chain")
    return time.monotonic() - started


class BareWorker:
    """`celery -A benchmarks.raw_throughput worker`, prefork."""

    def __init__(self, url: str, log: Path, concurrency: int) -> None:
        from benchmarks.raw_throughput import QUEUE

        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "benchmarks.raw_throughput", "worker",
             "--pool=prefork", f"--concurrency={concurrency}", "-Q", QUEUE,
             "--without-mingle", "--without-gossip", "--loglevel=WARNING",
             f"--hostname=bare-{uuid.uuid4().hex[:6]}@localhost"],
            env={**os.environ, "BENCH_REDIS_URL": url}, stdout=log.open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- chain message bytes --------------------------------------------------------------


@dataclass
class Published:
    """What a canvas published over its life: task messages (LPUSH onto a queue list,
    the bytes as kombu's Redis channel writes them) and fanout messages (PUBLISH:
    task-sent events, control broadcasts)."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    task_bytes: int = 0
    fanout: int = 0
    fanout_bytes: int = 0


@contextlib.contextmanager
def captured(app: Celery) -> Iterator[tuple[Published, dict[str, int]]]:
    """Record what the app's Redis channels would send instead of sending it, and the
    chord sizes its result backend would store."""
    from kombu.transport import redis as transport
    from kombu.utils.json import dumps

    sent = Published()
    sizes: dict[str, int] = {}

    def put(channel: Any, queue: str, message: dict[str, Any], **_: Any) -> None:
        sent.tasks.append(message)
        sent.task_bytes += len(dumps(message).encode())

    def put_fanout(channel: Any, exchange: str, message: dict[str, Any], routing_key: str,
                   **_: Any) -> None:
        topics = channel._get_publish_topics(exchange, routing_key)
        sent.fanout += len(topics)
        sent.fanout_bytes += len(dumps(message).encode()) * len(topics)

    def set_chord_size(group_id: str, size: int) -> None:
        sizes[group_id] = size

    with mock.patch.object(transport.Channel, "_put", put), \
            mock.patch.object(transport.Channel, "_put_fanout", put_fanout), \
            mock.patch.object(app.backend, "set_chord_size", set_chord_size):
        yield sent, sizes


def life_of(app: Celery, canvas: Signature) -> Published:
    """Every message `canvas` publishes until its last task has run, none of them sent."""
    with captured(app) as (sent, sizes):
        canvas.apply_async()
        reported: Counter[str] = Counter()
        done = 0
        while done < len(sent.tasks):
            _succeed(app, sent.tasks[done], sizes, reported)
            done += 1
    return sent


def _succeed(app: Celery, message: dict[str, Any], sizes: Mapping[str, int],
             reported: Counter[str]) -> None:
    """Publish what a worker publishes when this message's task succeeds (None as its
    result)."""
    headers = message["headers"]
    _args, _kwargs, embed = json.loads(base64.b64decode(message["body"]))
    task_id, root_id, retval = headers["id"], headers.get("root_id"), None
    # celery.app.trace's _dispatch_callbacks_and_chain
    callbacks = embed.get("callbacks") or []
    options = {"parent_id": task_id, "root_id": root_id, "priority": None}
    if len(callbacks) == 1:
        signature(callbacks[0], app=app).apply_async((retval,), **options)
    elif callbacks:
        sigs = [signature(c, app=app) for c in callbacks]
        for group_ in (s for s in sigs if isinstance(s, group)):
            group_.apply_async((retval,), **options)
        rest = [s for s in sigs if not isinstance(s, group)]
        if rest:
            group(rest, app=app).apply_async((retval,), **options)
    chain = embed.get("chain") or []
    if chain:
        signature(chain[-1], app=app).apply_async((retval,), chain=chain[:-1], **options)
    # The Redis result backend's on_chord_part_return: the last member applies the body.
    group_id = headers.get("group")
    if embed.get("chord") and group_id:
        reported[group_id] += 1
        if reported[group_id] == sizes.get(group_id):
            body = maybe_signature(embed["chord"], app=app)
            assert body is not None
            body.delay([retval] * sizes[group_id])


def chain_bytes(services: Services, route: str, steps: int) -> Published:
    """A linear workflow's canvas exactly as WorkflowService.create builds it: its head
    segment is applied, and each parked segment is published once the job store
    releases it (as its JSON, the way Dispatcher.publish sends a job's envelope)."""
    calls = [StepCall(str(uuid.uuid4()), 50, services.settings.job_timeout, route)
             for _ in range(steps)]
    depends_on = [[i - 1] if i else [] for i in range(steps)]
    canvas = services.workflows.canvas(plan(depends_on).tree, calls, depends_on)
    app = services.dispatcher.celery
    total = life_of(app, canvas.head)
    for parked in canvas.parked.values():
        part = life_of(app, app.signature(json.loads(json.dumps(parked))))
        total.tasks += part.tasks
        total.task_bytes += part.task_bytes
        total.fanout += part.fanout
        total.fanout_bytes += part.fanout_bytes
    return total


@dataclass
class Observed:
    """What a real workflow run sent to Redis, seen by MONITOR (database 0)."""

    messages: int = 0  # LPUSHes onto a queue's lists: the broker messages
    message_bytes: int = 0
    command_bytes: int = 0  # the arguments of every command any process sent


def observed_chain(server: RedisServer, services: Services, steps: int) -> Observed:
    """Run a linear workflow of `echo` steps on the running worker under MONITOR."""
    from tasks.jobs.message import broker_lists

    settings = services.settings
    queues = {settings.queue, *map(str, services.redis.hkeys(keys.ROUTES))}
    lists = {name for queue in queues for name in broker_lists(queue)}
    poller = redis.Redis.from_url(settings.redis_url, decode_responses=True,
                                  single_connection_client=True)
    poller.ping()
    own_port = poller.connection._sock.getsockname()[1]  # type: ignore[union-attr]
    body = {"name": "bench-bytes", "priority": 50, "steps": [
        {"type": "echo", "parameters": {"value": i}, "depends_on": [i - 1] if i else [],
         "retries": 0} for i in range(steps)]}
    monitor = Monitor(server.url)
    try:
        time.sleep(0.2)
        start = time.time()
        workflow = services.workflows.create("bench-chain", body, "bench")
        wait_for(lambda: poller.hget(keys.workflow(workflow.id), "status") not in (
            "pending", "running"), TIMEOUT, interval=0.02, message="the workflow")
        time.sleep(0.3)  # the last step's ack
        end = time.time()
    finally:
        monitor.close()
        poller.close()
    seen = Observed()
    for command in monitor.between(start, end, 0):
        if command.port in (own_port, 0) or not command.args:
            continue
        seen.command_bytes += sum(len(a.encode()) for a in command.args[1:])
        if command.args[0].upper() == "LPUSH" and command.args[1] in lists:
            seen.messages += len(command.args) - 2
            seen.message_bytes += sum(len(a.encode()) for a in command.args[2:])
    return seen


def bare_chain_bytes(steps: int) -> Published:
    from celery import chain

    from benchmarks.raw_throughput import app, noop

    run = uuid.uuid4().hex
    return life_of(app, chain(noop.si(run, i) for i in range(steps)))


# --- profiling (py-spy) ---------------------------------------------------------------


class Sampler:
    """`py-spy record` of a process and its children, in py-spy's raw (collapsed) format."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
             "--format", "raw", "--rate", str(rate), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=out.with_suffix(".log").open("wb"))
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_LINE = re.compile(r":\d+\)$")


def summarise(raw: Path, label: Callable[[int], str], top: int = 20) -> str:
    """Own and cumulative sample shares per function, per kind of process."""
    own: dict[str, Counter[str]] = defaultdict(Counter)
    cumulative: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        kind = "?"
        while frames and frames[0].startswith("process "):  # parent;child;...
            match = re.match(r"process (\d+)", frames.pop(0))
            kind = label(int(match.group(1))) if match else "?"
        frames = [_LINE.sub(")", f) for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        n = int(count)
        totals[kind] += n
        own[kind][frames[-1]] += n
        for frame in set(frames):
            cumulative[kind][frame] += n
    out = []
    for kind, total in totals.most_common():
        out.append(f"  {kind}: {total} samples (py-spy's non-idle samples)")
        # The frames every sample shares (the event loop, the pool's main) say nothing.
        inner = Counter({f: n for f, n in cumulative[kind].items() if n < 0.85 * total})
        ours = Counter({f: n for f, n in inner.items() if re.search(r"\((app|tasks|workers)/", f)})
        for title, table in (("own", own[kind]), ("cumulative", inner),
                             ("cumulative, Chordline's code", ours)):
            out.append(f"    top {title}:")
            out += [f"      {100 * n / total:5.1f}%  {frame}"
                    for frame, n in table.most_common(top)]
    return "\n".join(out)


def process_labels(root: int, child: str) -> Callable[[int], str]:
    """`main` for the process sampled, `child` for its children."""
    return lambda pid: "main" if pid == root else child


class ServerTime:
    """Redis's own time per command and script while it lasts (SLOWLOG with every command
    logged), and the server's CPU time."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._saved = client.config_get("slowlog-*")
        client.config_set("slowlog-max-len", 2_000_000)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        self._cpu = self._cpu_seconds()

    def _cpu_seconds(self) -> float:
        info = self._client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self, scripts: Mapping[str, str], jobs: int) -> str:
        cpu = self._cpu_seconds() - self._cpu
        entries = self._client.slowlog_get(2_000_000)
        for name, value in dict(self._saved).items():
            self._client.config_set(str(name), str(value))
        self._client.slowlog_reset()
        calls: Counter[str] = Counter()
        micros: Counter[str] = Counter()
        for entry in entries:
            args = entry["command"].decode(errors="replace").split(" ")
            name = args[0].upper()
            if name == "EVALSHA" and len(args) > 1:
                name = f"EVALSHA {scripts.get(args[1], args[1][:10])}"
            calls[name] += 1
            micros[name] += int(entry["duration"])
        out = [f"  Redis CPU {cpu * 1e6 / jobs:.0f} us per job (logging every command costs"
               f" some of it); {len(entries) / jobs:.1f} commands per job, those that scripts"
               " run included (their time is also their script's):"]
        out += [f"    {us / jobs:6.1f} us/job  {calls[name] / jobs:5.2f}/job"
                f"  {us / calls[name]:6.1f} us/call  {name}" for name, us in micros.most_common(15)]
        return "\n".join(out)


def redis_pid(server: RedisServer) -> int:
    import psutil

    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port and c.pid:
            return int(c.pid)
    raise RuntimeError("no process listens on the Redis port")


class CpuMeter:
    """CPU seconds (user + system) of processes by role, from start to stop."""

    def __init__(self, roles: Mapping[int, str]) -> None:
        import psutil

        self._roles = dict(roles)
        self._processes = {pid: psutil.Process(pid) for pid in roles}
        self._start = {pid: self._cpu(pid) for pid in roles}

    def _cpu(self, pid: int) -> float:
        times = self._processes[pid].cpu_times()
        return float(times.user + times.system)

    def stop(self, jobs: int) -> str:
        spent: dict[str, float] = defaultdict(float)
        for pid, role in self._roles.items():
            spent[role] += self._cpu(pid) - self._start[pid]
        parts = [f"{role} {1e6 * t / jobs:.0f}"
                 for role, t in sorted(spent.items(), key=lambda item: -item[1])]
        return (f"  CPU per job (us): total {1e6 * sum(spent.values()) / jobs:.0f}: "
                + ", ".join(parts))


class Probe:
    """--profile for one phase: CPU per process role, Redis's time per command, and (for
    `sample`, a pid) py-spy samples of that process and its children."""

    def __init__(self, out: Path, name: str, server: RedisServer, client: redis.Redis,
                 named: Mapping[int, tuple[str, str]], sample: int | None) -> None:
        self.name, self.out, self.sample = name, out, sample
        roles = process_roles(named)
        roles[redis_pid(server)] = "redis"
        self.sampler = Sampler(sample, out / f"{name}.txt") if sample else None
        self.cpu = CpuMeter(roles)
        self.server_time = ServerTime(client)
        self.child = next((child for _, child in named.values()), "child")

    def stop(self, jobs: int, scripts: Mapping[str, str]) -> str:
        lines = [f"\nprofile of {self.name} ({jobs} jobs):", self.cpu.stop(jobs),
                 self.server_time.stop(scripts, jobs)]
        if self.sampler and self.sample:
            self.sampler.stop()
            lines.append(summarise(self.sampler.out, process_labels(self.sample, self.child)))
        report = "\n".join(lines)
        (self.out / f"{self.name}.summary.txt").write_text(report + "\n")
        return report


# --- Redis round trips (MONITOR) ------------------------------------------------------

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Command:
    at: float
    db: int
    port: int
    args: list[str]


class Monitor:
    """Every command the server runs, from a MONITOR connection: when, in which database,
    from which client port (0: run by the script that the command before it started)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._monitor = self._client.monitor().__enter__()
        self.commands: list[Command] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        connection = self._monitor.connection
        while not self._stop.is_set():
            if not connection.can_read(timeout=0.05):
                continue
            line = str(connection.read_response())
            head, _, rest = line.partition("]")
            when, _, where = head.partition(" [")
            db, _, address = where.partition(" ")
            port = "0" if address == "lua" else address.rsplit(":", 1)[-1]
            if not port.isdigit() or not db.isdigit():
                continue
            args = [bytes(a, "utf-8").decode("unicode_escape") for a in _ARG.findall(rest)]
            self.commands.append(Command(float(when), int(db), int(port), args))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(redis.RedisError):
            self._monitor.__exit__(None, None, None)
        self._client.close()

    def between(self, start: float, end: float, db: int) -> list[Command]:
        return [c for c in self.commands if start <= c.at <= end and c.db == db]


def port_owners(redis_port: int, parents: Collection[int]) -> dict[int, int]:
    """Local port -> pid of every TCP connection to the Redis server. A socket inherited
    across a fork is listed for both processes: the parent made it, and uses it."""
    import psutil

    owners: dict[int, set[int]] = defaultdict(set)
    for c in psutil.net_connections("tcp"):
        if c.raddr and c.raddr.port == redis_port and c.pid:
            owners[c.laddr.port].add(c.pid)
    return {port: min(pids, key=lambda pid: (pid not in parents, pid))
            for port, pids in owners.items()}


def process_roles(named: Mapping[int, tuple[str, str]]) -> dict[int, str]:
    """pid -> role, for each named process (pid -> (its role, its children's role))."""
    import psutil

    roles = {os.getpid(): "bench process"}
    for pid, (name, child) in named.items():
        roles[pid] = name
        for process in psutil.Process(pid).children(recursive=True):
            roles[process.pid] = child
    return roles


def script_names(url: str) -> dict[str, str]:
    """SHA1 -> name of Chordline's Lua scripts as a client of this database loads them."""
    client = redis.Redis.from_url(url, decode_responses=True)
    scripts = Scripts(client)
    rooms = Path(__file__).resolve().parent.parent / "tasks"
    names = {getattr(scripts, p.stem).sha: p.stem for p in rooms.glob("*/lua/*.lua")
             if p.parent.parent.name != "core"}
    client.close()
    return names


def describe(command: Command, scripts: Mapping[str, str]) -> str:
    name, *rest = command.args or ["?"]
    name = name.upper()
    if name == "EVALSHA" and rest:
        return f"EVALSHA {scripts.get(rest[0], rest[0][:10])}"
    if name in ("MULTI", "EXEC", "PING", "INFO", "CLIENT", "SELECT") or not rest:
        return name
    key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}", "<id>", rest[0])
    return f"{name} {key[:70]}"


def trace(server: RedisServer, db: int, named: Mapping[int, tuple[str, str]],
          scripts: Mapping[str, str], act: Callable[[], None]) -> str:
    """The Redis commands of `act` (and of the second after it) by process role, in order;
    `*` marks what the same process also sends while idle (one idle second first)."""
    roles = process_roles(named)
    monitor = Monitor(server.url)
    time.sleep(0.5)
    idle_start = time.time()
    time.sleep(1.0)
    start = time.time()
    act()
    time.sleep(1.0)
    end = time.time()
    owners = port_owners(server.port, [pid for pid in named if pid in roles] + [os.getpid()])
    monitor.close()

    def role(command: Command) -> str:
        pid = owners.get(command.port)
        return roles.get(pid, f"pid {pid}") if pid else f"port {command.port}"

    idle = Counter((role(c), describe(c, scripts))
                   for c in monitor.between(idle_start, start, db) if c.port)
    busy: dict[str, list[Command]] = defaultdict(list)
    inner: dict[int, Counter[str]] = defaultdict(Counter)  # id(script call) -> its commands
    script: Command | None = None
    for command in monitor.between(start, end, db):
        if not command.port:
            if script is not None:
                inner[id(script)][command.args[0].upper() if command.args else "?"] += 1
            continue
        script = command if command.args[:1] and command.args[0].upper() in (
            "EVALSHA", "EVAL") else None
        busy[role(command)].append(command)
    out = []
    for name, commands in busy.items():
        fresh = sum((name, describe(c, scripts)) not in idle for c in commands)
        out.append(f"  {name}: {len(commands)} commands, {fresh} not also sent while idle")
        for c in commands:
            mark = "*" if (name, describe(c, scripts)) in idle else " "
            out.append(f"    {c.at - start:7.3f} s  {mark} {describe(c, scripts)}")
            if id(c) in inner:
                runs = inner[id(c)]
                out.append(f"                 runs {sum(runs.values())}: " + ", ".join(
                    f"{what} x{n}" for what, n in runs.most_common()))
    if idle:
        out.append("  while idle (per second):")
        out += [f"    {n:3d}  {name:14s} {what}" for (name, what), n in idle.most_common()]
    return "\n".join(out)


# --- the run --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600, help="jobs submitted, then drained")
    parser.add_argument("--e2e-jobs", type=int, default=400, help="jobs of the end-to-end phase")
    parser.add_argument("--threads", type=int, default=8, help="client threads that submit")
    parser.add_argument("--web-concurrency", type=int, default=2,
                        help="gunicorn workers of the web process (WEB_CONCURRENCY)")
    parser.add_argument("--chain-steps", type=int, default=50, help="steps of the chain")
    parser.add_argument("--repeat", type=int, default=3, help="chain runs (median kept)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of both sides, alternating (each side's median kept)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the web workers (submit) and the worker (drain) into DIR")
    parser.add_argument("--monitor", action="store_true",
                        help="list the Redis commands of one submit and of one job run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            rows, sizes = Bench(server, Path(tmp), args).run()
        finally:
            gc.collect()  # an AsyncResult collected after the server stopped would complain
            server.stop()
    print_table(rows, sizes, args)


Sizes = list[tuple[int, Observed, Published, Published]]


def print_table(rows: list[Row], sizes: Sizes,
                args: argparse.Namespace) -> None:
    print(f"\nthroughput, WEB_CONCURRENCY={args.web_concurrency}, {args.threads} client "
          "threads, worker concurrency 2; ratio = chordline / bare speed (goal >= 0.8)")
    print(f"{'phase':24s} {'unit':>8s} {'chordline':>10s} {'bare celery':>11s} {'ratio':>6s}")
    for row in rows:
        print(f"{row.name:24s} {row.unit:>8s} {row.chordline:10.1f} {row.bare:11.1f}"
              f" {row.ratio:6.3f}")
    print("\nchain message bytes per step, a linear workflow of echo steps (total / steps):")
    print("  seen: what a real run sent (MONITOR): broker messages (LPUSH onto queue lists),"
          " and every command's arguments")
    print("  canvas: Celery's rules applied to the compiled canvas and its parked segments,"
          " nothing sent")
    print(f"{'steps':>6s} {'seen msgs':>9s} {'seen B/step':>11s} {'all cmds B/step':>15s}"
          f" {'canvas B/step':>13s} {'+ events':>8s} {'bare celery':>11s}")
    for steps, seen, ours, bare in sizes:
        print(f"{steps:6d} {seen.messages:9d} {seen.message_bytes / steps:11.0f}"
              f" {seen.command_bytes / steps:15.0f} {ours.task_bytes / steps:13.0f}"
              f" {ours.fanout_bytes / steps:8.0f} {bare.task_bytes / steps:11.0f}")


class Bench:
    def __init__(self, server: RedisServer, tmp: Path, args: argparse.Namespace) -> None:
        self.server, self.tmp, self.args = server, tmp, args
        base = server.url.rsplit("/", 1)[0]
        self.url, self.bare_url = f"{base}/0", f"{base}/1"
        self.env = settings_env(self.url, tmp / "artifacts", CHORDLINE_LOG_LEVEL="WARNING",
                                CHORDLINE_API_KEYS=API_KEYS,
                                CHORDLINE_MAX_WORKFLOW_STEPS=str(max(CHAIN_LENGTHS)))
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        self.bare_client = redis.Redis.from_url(self.bare_url, decode_responses=True)
        os.environ["BENCH_REDIS_URL"] = self.bare_url  # before benchmarks.raw_throughput
        self.sessions: list[Any] = []  # HTTP connections and sessions, closed at the end
        self.rows: list[Row] = []
        self.route_job = ""  # a job of the end-to-end phase: its route's queue
        self.observed: dict[int, Observed] = {}

    def run(self) -> tuple[list[Row], Sizes]:
        app = create_app(overrides_from_env(self.env))
        services: Services = app.extensions["chordline"]
        try:
            # Rounds alternate the two sides, so that a slower minute of this machine
            # weighs on both; each side's median is kept.
            ours, bare = [], []
            for round_ in range(self.args.rounds):
                print(f"round {round_ + 1} of {self.args.rounds}", flush=True)
                ours.append(self.chordline(services, observe=round_ == 0))
                if round_ == 0:
                    job = services.store.get(self.route_job)
                    assert job is not None
                    route = str(job["route"])
                self.client.flushdb()  # its processes have stopped: the next round starts bare
                bare.append(self.bare())
            for k, (name, unit, higher) in enumerate(PHASES):
                self.rows.append(Row(name, unit, statistics.median(r[k] for r in ours),
                                     statistics.median(r[k] for r in bare), higher))
            print("chain message bytes, canvas ...", flush=True)
            sizes = [(n, self.observed[n], chain_bytes(services, route, n), bare_chain_bytes(n))
                     for n in CHAIN_LENGTHS]
        finally:
            for session in self.sessions:
                session.close()
            app.extensions["event_hub"].stop()
            services.dispatcher.celery.close()
            from benchmarks.raw_throughput import app as bare_app
            bare_app.close()
        return self.rows, sizes

    def chordline(self, services: Services, observe: bool = True) -> list[float]:
        args, tmp = self.args, self.tmp
        web = WebProcess(self.env, tmp / "web.log", workers=args.web_concurrency).start()
        worker: WorkerProcess | None = None
        try:
            submit = http_submitter(web.url, "key-bench-drain", "key-bench-warm", self.sessions)
            probes: list[Probe] = []  # --profile: started once the warm-up is over
            load = Load(args.jobs, args.threads, submit).start(lambda: self._probe(
                probes, "chordline-submit", {self._pid(web): ("web master", "web worker")},
                self._pid(web))).join()
            drain_ids = load.ids
            submit_rate = args.jobs / load.elapsed
            print(f"chordline submit: {submit_rate:.1f} jobs/s ({args.jobs} jobs, "
                  f"{args.threads} threads, WEB_CONCURRENCY={args.web_concurrency})", flush=True)
            self._report(probes, args.jobs)

            worker = WorkerProcess(self.env, tmp / "worker.log", concurrency=2, name="bench")
            worker.start()
            self._probe(probes, "chordline-drain",
                        {self._pid(worker): ("celery main", "pool process")}, self._pid(worker))
            before = completed(self.client, "bench-drain")  # done before the probe
            wait_completed(self.client, "bench-drain", args.jobs, "the chordline drain")
            drain_rate = args.jobs / job_span(self.client, drain_ids)
            print(f"chordline drain: {drain_rate:.1f} jobs/s", flush=True)
            self._report(probes, args.jobs - before)

            warm = completed(self.client, "bench-warm") + args.threads * WARMUP_PER_THREAD
            load = Load(args.e2e_jobs, args.threads, http_submitter(
                web.url, "key-bench-e2e", "key-bench-warm", self.sessions))
            load.start(lambda: wait_completed(self.client, "bench-warm", warm, "warm-up"))
            wait_completed(self.client, "bench-e2e", args.e2e_jobs, "the chordline e2e", load)
            e2e_rate = args.e2e_jobs / (time.monotonic() - load.started)
            load.join()
            self.route_job = load.ids[0]
            print(f"chordline end to end: {e2e_rate:.1f} jobs/s", flush=True)

            chordline_chain(services, args.chain_steps)  # warm-up
            chain = statistics.median(chordline_chain(services, args.chain_steps)
                                      for _ in range(args.repeat))
            per_step = 1000 * chain / args.chain_steps
            print(f"chordline chain of {args.chain_steps}: {per_step:.1f} ms/step", flush=True)
            if observe:
                print("chain message bytes, seen ...", flush=True)
                self.observed = {n: observed_chain(self.server, services, n)
                                 for n in CHAIN_LENGTHS}
            if args.monitor and observe:
                self.monitor(web, worker)
            return [submit_rate, drain_rate, e2e_rate, per_step]
        finally:
            if worker:
                worker.stop()
            web.stop()

    def bare(self) -> list[float]:
        args, run = self.args, uuid.uuid4().hex
        probes: list[Probe] = []
        load = Load(args.jobs, args.threads, celery_submitter(run)).start(
            lambda: self._probe(probes, "bare-submit", {}, None)).join()
        submit_rate = args.jobs / load.elapsed
        print(f"bare submit: {submit_rate:.1f} jobs/s", flush=True)
        self._report(probes, args.jobs)
        worker = BareWorker(self.bare_url, self.tmp / "bare.log", 2)
        try:
            if args.profile:  # from its first task: its start is not the drain's
                wait_for(lambda: bare_done(self.bare_client, run) >= 1, TIMEOUT, interval=0.001,
                         message="the bare worker")
            self._probe(probes, "bare-drain", {worker.process.pid: ("celery main",
                                                                    "pool process")}, None)
            before = bare_done(self.bare_client, run)
            wait_for(lambda: bare_done(self.bare_client, run) >= args.jobs, TIMEOUT,
                     interval=0.01, message="the bare drain")
            drain_rate = args.jobs / bare_span(self.bare_client, run)
            print(f"bare drain: {drain_rate:.1f} jobs/s", flush=True)
            self._report(probes, args.jobs - before)

            run = uuid.uuid4().hex
            load = Load(args.e2e_jobs, args.threads, celery_submitter(run)).start(
                lambda: time.sleep(0.5))
            wait_for(lambda: bare_done(self.bare_client, run) >= args.e2e_jobs, TIMEOUT,
                     interval=0.01, message="the bare e2e")
            e2e_rate = args.e2e_jobs / (time.monotonic() - load.started)
            load.join()
            print(f"bare end to end: {e2e_rate:.1f} jobs/s", flush=True)

            bare_chain(self.bare_client, args.chain_steps)  # warm-up
            chain = statistics.median(bare_chain(self.bare_client, args.chain_steps)
                                      for _ in range(args.repeat))
            per_step = 1000 * chain / args.chain_steps
            print(f"bare chain of {args.chain_steps}: {per_step:.1f} ms/step", flush=True)
            if args.monitor:
                self.monitor_bare(worker)
            return [submit_rate, drain_rate, e2e_rate, per_step]
        finally:
            worker.stop()

    # --profile and --monitor

    def _pid(self, process: WebProcess | WorkerProcess) -> int:
        assert process.process is not None
        return process.process.pid

    def _probe(self, into: list[Probe], name: str, named: Mapping[int, tuple[str, str]],
               sample: int | None) -> None:
        if self.args.profile:
            self.args.profile.mkdir(parents=True, exist_ok=True)
            into.append(Probe(self.args.profile, name, self.server, self.client, named, sample))

    def _report(self, probes: list[Probe], jobs: int) -> None:
        if probes:
            print(probes.pop().stop(jobs, script_names(self.url)), flush=True)

    def monitor(self, web: WebProcess, worker: WorkerProcess) -> None:
        """One submit over HTTP, then its run, under MONITOR."""
        session = requests.Session()
        session.headers["x-api-key"] = "key-bench-e2e"
        self.sessions.append(session)
        before = completed(self.client, "bench-e2e")
        for _ in range(4):  # the web workers' connections are warm
            session.post(f"{web.url}/api/jobs/submit", json={"type": "echo"}, timeout=30)
        wait_completed(self.client, "bench-e2e", before + 4, "warm-up")
        time.sleep(0.5)
        named = {self._pid(web): ("web master", "web worker"),
                 self._pid(worker): ("celery main", "pool process")}

        def submit() -> None:
            session.post(f"{web.url}/api/jobs/submit", json={"type": "echo"}, timeout=30)
        listing = trace(self.server, 0, named, script_names(self.url), submit)
        wait_completed(self.client, "bench-e2e", before + 5, "the traced job")
        print(f"\nRedis commands of one chordline submit (web worker) and its run:\n{listing}",
              flush=True)

    def monitor_bare(self, worker: BareWorker) -> None:
        from benchmarks.raw_throughput import noop

        run = uuid.uuid4().hex
        noop.delay(run, 0)  # the producer's connection is warm
        wait_for(lambda: bare_done(self.bare_client, run) >= 1, 30, message="warm-up")
        named = {worker.process.pid: ("celery main", "pool process")}
        listing = trace(self.server, 1, named, {}, lambda: noop.delay(run, 1) and None)
        wait_for(lambda: bare_done(self.bare_client, run) >= 2, 30, message="the traced task")
        print(f"\nRedis commands of one bare delay() (bench process) and its run:\n{listing}",
              flush=True)


PHASES = (("submit", "jobs/s", True), ("drain", "jobs/s", True),
          ("end to end", "jobs/s", True), ("per-step overhead", "ms/step", False))


if __name__ == "__main__":
    main()
