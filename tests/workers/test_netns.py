"""Two nodes as separate hosts (network namespaces), one cut off mid-job: the job finishes on
the other within 30 s, never runs on both at once, and the cut-off node's outcome never lands."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import create_app
from app.embedded_redis import RedisServer
from tasks.core.events import EventType
from tests.support import (
    Api,
    HostNamespace,
    LiveServer,
    NodeProcess,
    epoch,
    overrides_from_env,
    settings_env,
    wait_for,
    write_catalog,
)

pytestmark = pytest.mark.slow


def _namespaces_work() -> str | None:
    """Why this machine cannot make network namespaces (None when it can)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2 (`ip`); CI runs as root"
    probe = f"chordline-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None if made.returncode == 0 else f"`ip netns add` failed: {made.stderr.strip()}"


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[HostNamespace, HostNamespace]]:
    if (reason := _namespaces_work()) is not None:
        pytest.skip(reason)
    made = [HostNamespace(0), HostNamespace(1)]
    try:
        for host in made:
            host.create()
        yield made[0], made[1]
    finally:
        for host in made:
            host.delete()


def test_a_node_cut_off_mid_job_is_fenced_and_its_job_finishes_elsewhere(
        hosts: tuple[HostNamespace, HostNamespace], tmp_path: Path) -> None:
    # Given a Redis this host serves on loopback and on both links, the API here,
    # and a node on each other host, each with one 24 GB GPU and model m
    host_a, host_b = hosts
    server = RedisServer(tmp_path / "redis", bind=("127.0.0.1", host_a.gateway, host_b.gateway),
                         password=secrets.token_hex(16)).start()
    env = settings_env(server.url, tmp_path / "artifacts", CHORDLINE_GPUS="L40:24",
                       CHORDLINE_MODELS=write_catalog(tmp_path / "models.json", {"m": 10}))
    app = create_app(overrides_from_env(env))
    api = Api(LiveServer(app).start().url, "key-tenant-a")
    nodes: list[NodeProcess] = []

    def node(host: HostNamespace, name: str) -> NodeProcess:
        url = server.url.replace("@127.0.0.1", f"@{host.gateway}")
        process = NodeProcess({**env, "REDIS_URL": url}, tmp_path / f"{name}.log", name,
                              prefix=host.prefix)
        nodes.append(process)
        return process.start()

    try:
        node(host_a, "host-a")
        job_id = api.submit_ok({"type": "simulate", "parameters": {
            "model": "m", "seconds": 10, "vram_gb": 10}})
        wait_for(lambda: api.job(job_id)["status"] == "running", 20, message="running on A")
        node(host_b, "host-b")

        # When host A's link goes down mid-job
        host_a.cut()
        cut_at = time.time()

        # Then the job is taken over by host B and completes there within 30 s
        job = api.wait(job_id, timeout=40)
        assert job["status"] == "completed" and job["machine_id"] == "host-b"
        events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
        starts = [e for e in events if e["type"] == EventType.JOB_STARTED]
        assert [e["data"]["machine_id"] for e in starts] == ["host-a", "host-b"]
        b_started = epoch(starts[1]["ts"])
        assert b_started < cut_at + 30 and epoch(job["completed_at"]) < cut_at + 30
        # and host A, unable to renew its lease, stopped its run before B started it
        a_log = (tmp_path / "host-a.log").read_text()
        a_ended = _run_end(a_log, job_id)
        assert cut_at < a_ended < b_started, (cut_at, a_ended, b_started)

        # When the link comes back, host A's outcome never lands: it was discarded, and
        # A comes back online for new work
        host_a.mend()
        operator = Api(api.base_url, "key-operator")
        wait_for(lambda: operator.request("GET", "/api/machines/host-a").json()[
            "machine"]["status"] == "online", 30, interval=0.2, message="host A back online")
        assert "outcome discarded" in (tmp_path / "host-a.log").read_text()
        events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
        assert [e["type"] for e in events].count(EventType.JOB_COMPLETED) == 1
        assert api.job(job_id)["machine_id"] == "host-b"
        types = [e["type"] for e in operator.request("GET", "/api/events").json()["events"]]
        assert EventType.MACHINE_OFFLINE in types
    finally:
        for process in nodes:
            process.kill()
        app.extensions["event_hub"].stop()
        server.stop()


def _run_end(log: str, job_id: str) -> float:
    match = re.search(rf"simulate job {job_id}: run ends at ([0-9.]+) \((\w+)\)", log)
    assert match is not None, "host A's run never ended"
    assert match.group(2) == "stopped"
    return float(match.group(1))
