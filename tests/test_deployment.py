"""The Procfile, as a platform runs it, and the docker files that mirror it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from app.client import ChordlineClient
from app.devstack import read_procfile
from app.embedded_redis import free_port
from tasks.events import EventType
from tests.support import ROOT, WorkerProcess, wait_for


def test_the_procfile_names_web_worker_and_flower() -> None:
    processes = read_procfile(ROOT / "Procfile")
    assert set(processes) == {"web", "worker", "flower"}
    assert processes["web"].startswith("gunicorn ")
    assert "--events" in processes["worker"]


def test_compose_runs_the_procfile_processes_beside_a_durable_redis() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    procfile = read_procfile(ROOT / "Procfile")
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "noeviction" in redis_command
    for name, service in services.items():
        if name == "redis":
            continue
        assert service["labels"]["chordline.procfile"] == name
        assert name in procfile
        command = service["command"][-1]
        assert procfile[name].split()[0] in command
    assert (ROOT / "docker" / "Dockerfile").read_text().count("COPY") >= 4


@pytest.fixture
def web_process(stack_env: dict[str, str], worker: WorkerProcess) -> Iterator[str]:
    """The `web` line of the Procfile, started by a shell exactly as a platform would."""
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **stack_env, "PORT": str(port), "WEB_CONCURRENCY": "1", "PATH": path}
    process = subprocess.Popen(["/bin/sh", "-c", "exec " + read_procfile(ROOT / "Procfile")["web"]],
                               cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/health/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return process.poll() is not None

    wait_for(up, 30, interval=0.2, message="gunicorn to serve")
    assert process.poll() is None, "gunicorn exited"
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def test_the_web_process_serves_a_job_end_to_end(web_process: str) -> None:
    headers = {"x-api-key": "key-tenant-a"}
    response = requests.post(f"{web_process}/api/jobs/submit", headers=headers, timeout=10,
                             json={"type": "text-to-image", "prompt": "gunicorn",
                                   "parameters": {"width": 64, "height": 64}})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]

    def done() -> dict | None:
        job = requests.get(f"{web_process}/api/jobs/{job_id}/status", headers=headers,
                           timeout=10).json()["job"]
        return job if job["status"] in {"completed", "failed"} else None

    job = wait_for(done, 30, interval=0.1)
    assert job["status"] == "completed"
    image = requests.get(web_process + job["result"]["artifacts"][0]["url"], headers=headers,
                         timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_the_web_process_streams_events_over_websocket(web_process: str) -> None:
    """gunicorn's gevent worker: the hub's pub/sub and every socket are greenlets."""
    client = ChordlineClient(web_process, "key-tenant-a")
    kind, job_id = client.submit({"type": "sleep", "parameters": {"seconds": 0.5}})
    events = list(client.watch(kind, job_id))
    assert events[0]["type"] == EventType.JOB_QUEUED
    assert events[-1]["type"] == EventType.JOB_COMPLETED
    assert events == client.events(kind, job_id)
