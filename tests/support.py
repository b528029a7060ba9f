"""Real processes for the tests: a worker subprocess, an HTTP server, an API client."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from app.client import ChordlineClient
from tasks.core import keys, statuses
from tasks.core.events import EventLog
from tasks.core.settings import Settings
from tasks.webhooks import signature

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {str(status) for status in statuses.TERMINAL}
WORKFLOW_DONE = {str(s) for s in statuses.WORKFLOW_FINAL}


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
              message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def epoch(ts: str) -> float:
    """An API timestamp (ISO 8601, UTC) in seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class EventTap:
    """Every event published on the live channel while it listens."""

    def __init__(self, client: redis.Redis) -> None:
        self.events: list[dict[str, Any]] = []
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(EventLog(client).channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message:
                self.events.append(json.loads(message["data"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


FINISHED_EVENTS = {"job.completed", "job.failed", "job.cancelled", "job.skipped"}


def kept(live: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What the history keeps of events seen live (tasks/core/events.py) once the jobs among
    them have finished: everything, but of each such job only its last progress event."""
    finished = {e["job_id"] for e in live if e["type"] in FINISHED_EVENTS}
    last = {e["job_id"]: e["id"] for e in live if e["type"] == "job.progress"}
    return [e for e in live if e["type"] != "job.progress" or e["job_id"] not in finished
            or last[e["job_id"]] == e["id"]]


def overrides_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The same settings as a worker's environment, as create_app overrides."""
    return dict(Settings.from_env(environ=env).__dict__)


_databases = itertools.count(1)
# Database 0 is the session stack's; each isolated stack takes one of the others.
SESSION_DATABASES = 64


def fresh_database(server_url: str) -> str:
    """A Redis database of the session server that no other test uses."""
    number = next(_databases)
    assert number < SESSION_DATABASES, f"the session Redis has {SESSION_DATABASES} databases"
    return f"{server_url.rsplit('/', 1)[0]}/{number}"


def settings_env(redis_url: str, artifact_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a test stack shares: short leases and backoffs, so recovery is quick
    to see."""
    return {
        "REDIS_URL": redis_url,
        "CHORDLINE_API_KEYS": "key-tenant-a=tenant-a,key-tenant-b=tenant-b,"
                              "key-stats-only=stats,key-operator=*,key-viewer=@viewer",
        "CHORDLINE_TEST_HANDLERS": "1",
        "CHORDLINE_PREVIEW_HANDLERS": "1",
        "CHORDLINE_ARTIFACT_DIR": str(artifact_dir),
        "CHORDLINE_LEASE_SECONDS": "3",
        "CHORDLINE_REAPER_INTERVAL": "0.5",
        "CHORDLINE_HEARTBEAT_INTERVAL": "0.5",
        "CHORDLINE_OUTBOX_GRACE_SECONDS": "2",
        "CHORDLINE_COMPENSATION_BACKOFF": "0.05",
        "CHORDLINE_LOG_LEVEL": "INFO",
        "CHORDLINE_MAX_OUTPUT_SIDE": "4096",
        # CPU-only test workers whatever the host has; fleet tests declare their GPUs.
        "CHORDLINE_GPUS": "none",
        "CHORDLINE_ROUTING_INTERVAL": "0.25",
        # The tests and benchmarks submit in bursts; tests/app/test_quotas.py sets its own.
        "CHORDLINE_QUOTA_SUBMITS_PER_SECOND": "10000",
        "CHORDLINE_QUOTA_UNFINISHED_JOBS": "1000000",
        # The tests' webhook receivers listen on loopback; their retries come quickly.
        "CHORDLINE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "CHORDLINE_WEBHOOK_RETRY_BASE": "0.2",
        **extra,
    }


class ProcessGroup:
    """A child process in its own process group, so that a test can SIGKILL all of it (the
    main process and its pool), as a crash would."""

    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env,
                                        stdout=self.log_path.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_until(self, ready: Callable[[redis.Redis], bool], timeout: float,
                    what: str) -> None:
        client = redis.Redis.from_url(self.env["REDIS_URL"], decode_responses=True)
        wait_for(lambda: ready(client) or self._died(), timeout, interval=0.1, message=what)
        if self._died():
            raise RuntimeError(f"{what}: the process exited; see {self.log_path}")

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL the whole group: no signal handler runs."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class WebProcess(ProcessGroup):
    """The Procfile's `web` line (gunicorn, gevent workers), started by a shell as a
    platform would, on a port it keeps across restarts."""

    def __init__(self, env: Mapping[str, str], log_path: Path, workers: int = 1) -> None:
        from app.embedded_redis import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, **env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers),
                    "PATH": path}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn_conf makes its own

    def start(self, timeout: float = 30) -> WebProcess:
        from app.devstack import read_procfile

        self._spawn(["/bin/sh", "-c", "exec " + read_procfile(ROOT / "Procfile")["web"]])
        wait_for(lambda: self._serving() or self._died(), timeout, interval=0.2,
                 message="gunicorn to serve")
        if self._died():
            raise RuntimeError(f"gunicorn exited; see {self.log_path}")
        return self

    def _serving(self) -> bool:
        try:
            return requests.get(f"{self.url}/health/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False


class WorkerProcess(ProcessGroup):
    """`celery -A workers.bootstrap worker`, one CPU worker."""

    def __init__(self, env: Mapping[str, str], log_path: Path, concurrency: int = 2,
                 name: str | None = None) -> None:
        self.hostname = f"{name or 'test'}-{uuid.uuid4().hex[:6]}@localhost"
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.concurrency = concurrency

    def start(self, timeout: float = 30) -> WorkerProcess:
        self._spawn([sys.executable, "-m", "celery", "-A", "workers.bootstrap", "worker",
                     "--pool=prefork", f"--concurrency={self.concurrency}",
                     "--without-mingle", "--without-gossip", "--loglevel=INFO",
                     f"--hostname={self.hostname}"])
        self._wait_until(lambda client: bool(client.exists(keys.worker(self.hostname))),
                         timeout, f"worker {self.hostname} heartbeat")
        return self


class NodeProcess(ProcessGroup):
    """`python -m workers.node` as the Procfile runs it: one node, a worker per GPU."""

    def __init__(self, env: Mapping[str, str], log_path: Path, machine_id: str,
                 workers: int = 1, prefix: Sequence[str] = ()) -> None:
        self.machine_id = machine_id
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1",
                    "CHORDLINE_MACHINE_ID": machine_id}
        self.log_path = log_path
        self.workers = workers
        self.prefix = list(prefix)  # e.g. ip netns exec NAME

    def start(self, timeout: float = 45) -> NodeProcess:
        self._spawn([*self.prefix, sys.executable, "-m", "workers.node",
                     f"--name={self.machine_id}", "--", "--pool=prefork",
                     "--without-mingle", "--without-gossip", "--loglevel=INFO"])
        self._wait_until(self.online, timeout, f"node {self.machine_id} online")
        return self

    def online(self, client: redis.Redis) -> bool:
        """Every worker of the node has beaten in the last two seconds."""
        since = time.time() * 1000 - 2000
        return bool(client.zcount(keys.machine_workers(self.machine_id), since, "+inf")
                    >= self.workers)


def write_catalog(path: Path, models: Mapping[str, int]) -> str:
    """A model catalog of `simulate` models (name -> GB), for a test node."""
    path.write_text(json.dumps({"models": [
        {"name": name, "types": ["simulate"], "vram_gb": gb} for name, gb in models.items()]}))
    return str(path)


class HostNamespace:
    """Another host on this machine: a network namespace joined to this one by a veth
    pair, so its processes reach this host only at `gateway`, over a link a test can cut."""

    def __init__(self, index: int) -> None:
        tag = f"{os.getpid() % 10000}{index}"
        self.name = f"chordline-{tag}"
        self.host_link, self.inner_link = f"clh{tag}", f"cln{tag}"
        # A block of subnets per test run (xdist's run id, else this process) and within
        # it one per xdist process (gw0, gw1, ...), so parallel tests never share one.
        run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        run = int(run_id[:8], 16) if run_id else os.getpid()
        slot = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
        subnet = f"10.231.{(run % 7) * 32 + (slot % 8) * 4 + index}"
        self.gateway, self.address = f"{subnet}.1", f"{subnet}.2"

    def create(self) -> HostNamespace:
        inside = self.prefix
        for command in (["ip", "netns", "add", self.name],
                        [*inside, "ip", "link", "set", "lo", "up"],
                        ["ip", "link", "add", self.host_link, "type", "veth", "peer", "name",
                         self.inner_link],
                        ["ip", "link", "set", self.inner_link, "netns", self.name],
                        ["ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_link],
                        ["ip", "link", "set", self.host_link, "up"],
                        [*inside, "ip", "addr", "add", f"{self.address}/30", "dev",
                         self.inner_link],
                        [*inside, "ip", "link", "set", self.inner_link, "up"]):
            subprocess.run(command, check=True, capture_output=True)
        return self

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Take the link down: packets stop, no connection is told (a cable pulled)."""
        subprocess.run(["ip", "link", "set", self.host_link, "down"], check=True)

    def mend(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_link, "up"], check=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)


Reply = tuple[int, dict[str, str]]


class WebhookReceiver:
    """A webhook endpoint on loopback that checks every signature, as a receiver must.

    `reply(n, delivery)` answers the n-th request (from 1): a status and headers,
    after sleeping `delivery["sleep"]` if it sets one. Every request is kept; `ok`
    holds the deliveries it answered 2xx, in arrival order.
    """

    def __init__(self, secret: str, reply: Callable[[int, dict[str, Any]], Reply] | None = None,
                 port: int = 0) -> None:
        self.secret = secret
        self.reply = reply or (lambda n, d: (200, {}))
        self.requests: list[dict[str, Any]] = []
        self.ok: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.handle(self, body)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            signature.verify(self.secret, headers, body)
            verified = True
        except signature.InvalidSignature:
            verified = False
        delivery = {"id": headers.get("webhook-id"), "headers": headers, "verified": verified,
                    "body": json.loads(body), "raw": body, "at": time.monotonic()}
        with self._lock:
            self.requests.append(delivery)
            status, extra = self.reply(len(self.requests), delivery)
        time.sleep(float(delivery.get("sleep", 0)))
        request.send_response(status)
        for name, value in extra.items():
            request.send_header(name, value)
        request.send_header("content-length", "0")
        request.end_headers()
        if 200 <= status < 300:
            with self._lock:
                self.ok.append(delivery)

    def types(self) -> list[str]:
        return [d["body"]["type"] for d in self.ok]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LiveServer:
    """The Flask app on a real socket (werkzeug's threaded server)."""

    def __init__(self, app: Flask) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()


class Api:
    """A thin HTTP client for one API key."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if key:
            self.session.headers["x-api-key"] = key

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 15)
        return self.session.request(method, self.base_url + path, **kwargs)

    def submit(self, body: Mapping[str, Any], **kwargs: Any) -> requests.Response:
        return self.request("POST", "/api/jobs/submit", json=body, **kwargs)

    def submit_ok(self, body: Mapping[str, Any]) -> str:
        response = self.submit(body)
        assert response.status_code == 200, response.text
        return str(response.json()["job_id"])

    def webhook_secret(self) -> str:
        response = self.request("POST", "/api/webhooks/secret")
        assert response.status_code == 201, response.text
        return str(response.json()["secret"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/api/jobs/{job_id}/status")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def wait(self, job_id: str, statuses: set[str] = TERMINAL,
             timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(job_id))["status"] in statuses and j,
                        timeout, interval=0.1, message=f"job {job_id} to reach {statuses}")

    def create_workflow(self, body: Mapping[str, Any]) -> tuple[str, list[str]]:
        response = self.request("POST", "/api/workflows", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        return str(data["workflow_id"]), list(data["job_ids"])

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """`{"workflow": ..., "steps": [...]}` as the status endpoint answers."""
        response = self.request("GET", f"/api/workflows/{workflow_id}/status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait_workflow(self, workflow_id: str, statuses: set[str] = WORKFLOW_DONE,
                      timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (w := self.workflow(workflow_id))["workflow"]["status"] in statuses and w,
            timeout, interval=0.1, message=f"workflow {workflow_id} to reach {statuses}")


class Socket:
    """A WebSocket client over a real socket, with helpers to read what the server sends."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.client = ChordlineClient(base_url, key)
        self.ws = self.client.connect()

    def send(self, message: Mapping[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def subscribe(self, **subject: Any) -> dict[str, Any]:
        """Subscribe and return the server's answer (`subscribed` or `error`)."""
        self.send({"action": "subscribe", **subject})
        return self.next()

    def next(self, timeout: float = 15) -> dict[str, Any]:
        raw = self.ws.receive(timeout=timeout)
        assert raw is not None, f"nothing received within {timeout} s"
        message: dict[str, Any] = json.loads(raw)
        return message

    def until(self, last: Callable[[dict[str, Any]], bool],
              timeout: float = 60) -> list[dict[str, Any]]:
        """Every message up to and including the first for which `last` is true."""
        deadline = time.monotonic() + timeout
        received: list[dict[str, Any]] = []
        while not received or not last(received[-1]):
            received.append(self.next(max(deadline - time.monotonic(), 0.01)))
        return received

    def silent_for(self, seconds: float) -> bool:
        return self.ws.receive(timeout=seconds) is None

    def close(self) -> None:
        if self.ws.connected:
            self.ws.close()


class CuttableProxy:
    """A TCP proxy in front of a server whose open connections a test can cut,
    as a network drop would; new connections still go through."""

    def __init__(self, target_url: str) -> None:
        self._target = ("127.0.0.1", int(target_url.rsplit(":", 1)[1]))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()
