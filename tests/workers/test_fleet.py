"""The GPU fleet on real nodes: jobs run only where they fit, warm first; a job no node fits
waits with its reason; drain, resume, and a node killed mid-job."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.embedded_redis import RedisServer
from tasks.core import keys
from tasks.core.events import EventType
from tests.support import (
    Api,
    LiveServer,
    NodeProcess,
    epoch,
    fresh_database,
    overrides_from_env,
    settings_env,
    wait_for,
    write_catalog,
)

pytestmark = pytest.mark.slow

# What each node declares: GPUs (NAME:GB), its simulate models (name -> GB), its labels.
NODES: dict[str, dict[str, Any]] = {
    "small": {"gpus": "RTX-4090:24", "models": {"a": 10, "b": 10}, "labels": {"zone": "eu"}},
    "big": {"gpus": "A100:80,A100:80", "models": {"a": 10, "b": 10, "c": 40},
            "labels": {"zone": "us"}},
    "huge": {"gpus": "MI400:256", "models": {"a": 10}, "labels": {}},
}


@dataclass
class Fleet:
    env: dict[str, str]
    app: Flask
    server: LiveServer
    logs: Path
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def start(self, name: str) -> NodeProcess:
        spec = NODES[name]
        env = {**self.env, "CHORDLINE_GPUS": spec["gpus"],
               "CHORDLINE_MODELS": write_catalog(self.logs / f"{name}.json", spec["models"]),
               "CHORDLINE_MACHINE_LABELS": ",".join(f"{k}={v}" for k, v in
                                                    spec["labels"].items())}
        node = NodeProcess(env, self.logs / f"{name}.log", name,
                           workers=len(spec["gpus"].split(","))).start()
        self.nodes[name] = node
        return node

    def api(self, key: str = "key-tenant-a") -> Api:
        return Api(self.server.url, key)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.server.stop()
        self.app.extensions["event_hub"].stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Fleet]:
    """A small node (one 24 GB GPU, zone eu) and a big one (two 80 GB GPUs, zone us)."""
    env = settings_env(fresh_database(redis_server.url), tmp_path_factory.mktemp("artifacts"))
    app = create_app(overrides_from_env(env))
    fleet = Fleet(env, app, LiveServer(app).start(), tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start("small")
        fleet.start("big")
        yield fleet
    finally:
        fleet.close()


def simulate(model: str, seconds: float = 0.3, vram: int = 10, **extra: Any) -> dict[str, Any]:
    return {"type": "simulate", "parameters": {"model": model, "seconds": seconds,
                                               "load_seconds": 0.5, "vram_gb": vram}, **extra}


def gpu_of(job: dict[str, Any]) -> tuple[str, float]:
    """The node a job ran on, and the GB of the GPU it ran on."""
    name = job["machine_id"]
    gpus = NODES[name]["gpus"].split(",")
    return name, float(gpus[job["gpu_index"]].split(":")[1])


def test_every_job_runs_on_a_gpu_that_fits_it_and_models_stay_warm(fleet: Fleet) -> None:
    # Given jobs that fit both nodes, only the big one, or only the eu-labelled small one
    api = fleet.api()
    bodies = ([simulate("a") for _ in range(4)] + [simulate("c", vram=40) for _ in range(2)]
              + [simulate("b", requirements={"labels": {"zone": "eu"}}) for _ in range(2)]
              + [simulate("a", requirements={"gpu_memory": 30}) for _ in range(2)])
    job_ids = [api.submit_ok(body) for body in bodies]
    # When they run
    jobs = [api.wait(job_id, timeout=60) for job_id in job_ids]
    # Then every one completed on a node and GPU that satisfy it
    for job in jobs:
        assert job["status"] == "completed", job
        node, gpu_gb = gpu_of(job)
        need = job["requirements"]
        assert need["gpu_memory"] <= gpu_gb
        assert need["model"] in NODES[node]["models"]
        assert NODES[node]["labels"].items() >= need.get("labels", {}).items()
        assert job["result"]["gpu"]["index"] == job["gpu_index"]
    assert {gpu_of(j)[0] for j in jobs[4:6]} == {"big"}, "c is only on the big node"
    assert {gpu_of(j)[0] for j in jobs[6:8]} == {"small"}, "only small is in zone eu"
    assert {gpu_of(j)[0] for j in jobs[8:]} == {"big"}, "30 GB fits only an A100"
    # and a model, once loaded on a GPU, served the jobs after it there without a load
    assert sum(not j["result"]["loaded"] for j in jobs) >= 3


def test_the_machine_routes_describe_the_fleet_to_operators_only(fleet: Fleet) -> None:
    operator = fleet.api("key-operator")
    machines = {m["id"]: m for m in operator.request("GET", "/api/machines").json()["machines"]}
    big = machines["big"]
    assert big["status"] == "online" and big["labels"] == {"zone": "us"}
    assert [(g["index"], g["name"], g["memory_total_mb"]) for g in big["gpus"]] == [
        (0, "A100", 80 * 1024), (1, "A100", 80 * 1024)]
    assert set(big["gpus"][0]) >= {"index", "name", "memory_total_mb", "memory_free_mb",
                                    "utilization", "models_loaded"}
    assert big["models_available"] == ["a", "b", "c"] and "simulate" in big["gpu_job_types"]
    assert len(big["workers"]) == 2 and big["last_seen"]
    one = operator.request("GET", "/api/machines/small").json()["machine"]
    assert one["id"] == "small" and len(one["gpus"]) == 1
    tenant = fleet.api().request("GET", "/api/machines")
    assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "FORBIDDEN"
    assert fleet.api(None).request("GET", "/api/machines").status_code == 401  # type: ignore[arg-type]


def test_a_job_no_machine_fits_waits_with_its_reason_and_starts_when_one_comes(
        fleet: Fleet) -> None:
    # Given a 200 GB job, and another that is cancelled while it waits
    api = fleet.api()
    waiting = api.submit_ok(simulate("a", vram=200))
    cancelled = api.submit_ok(simulate("a", vram=200))
    job = api.job(waiting)
    assert job["status"] == "pending"
    assert job["waiting_reason"] == "no online machine has 200 GB of GPU memory"
    events = api.request("GET", f"/api/jobs/{waiting}/events").json()["events"]
    assert events[-1]["type"] == EventType.JOB_UNSCHEDULABLE
    assert events[-1]["data"]["reason"] == job["waiting_reason"]
    assert api.request("POST", f"/api/jobs/{cancelled}/cancel").status_code == 200
    time.sleep(1)
    assert api.job(waiting)["status"] == "pending", "never failed for want of a machine"
    # When a node with a 256 GB GPU comes online
    fleet.start("huge")
    # Then the job starts there by itself, and the cancelled one never runs
    done = api.wait(waiting, timeout=30)
    assert done["status"] == "completed" and done["machine_id"] == "huge"
    assert done["waiting_reason"] is None
    assert api.job(cancelled)["status"] == "cancelled"
    fleet.nodes.pop("huge").stop()


def test_a_drained_machine_starts_no_new_job_finishes_its_running_one_and_resumes(
        fleet: Fleet) -> None:
    # Given a job running on the small node (the only one in zone eu)
    api, operator = fleet.api(), fleet.api("key-operator")
    eu = {"requirements": {"labels": {"zone": "eu"}}}
    running = api.submit_ok(simulate("a", seconds=2, **eu))
    wait_for(lambda: api.job(running)["status"] == "running", 20, message="running on small")
    # When an operator drains it
    drained = operator.request("POST", "/api/machines/small/drain")
    assert drained.status_code == 200 and drained.json()["machine"]["status"] == "draining"
    queued = api.submit_ok(simulate("a", **eu))
    anywhere = api.submit_ok(simulate("b"))
    # Then its running job finishes there, new work goes elsewhere or waits, saying why
    assert api.wait(running)["machine_id"] == "small"
    assert api.wait(anywhere)["machine_id"] == "big"
    wait_for(lambda: api.job(queued)["waiting_reason"], 10, message="the reason to wait")
    assert api.job(queued)["waiting_reason"] == (
        "every online machine that could run it is draining")
    assert api.job(queued)["status"] == "pending"
    # And once resumed, the waiting job runs there
    resumed = operator.request("POST", "/api/machines/small/resume")
    assert resumed.json()["machine"]["status"] == "online"
    assert api.wait(queued, timeout=20)["machine_id"] == "small"
    types = [e["type"] for e in operator.request("GET", "/api/events").json()["events"]]
    assert EventType.MACHINE_DRAINING in types


def test_the_node_process_restarts_a_gpu_worker_that_dies(fleet: Fleet) -> None:
    # Given the big node's two GPU workers
    client = fleet.app.extensions["chordline"].redis
    hostnames = sorted(client.zrange(keys.machine_workers("big"), 0, -1))
    assert [h.split("@")[0] for h in hostnames] == ["big-gpu0", "big-gpu1"]
    pid = int(client.hget(keys.worker(hostnames[1]), "pid"))
    # When one of them dies (SIGKILL: its pool process follows its parent)
    os.kill(pid, signal.SIGKILL)
    # Then the node starts it again, and both GPUs share the next jobs
    wait_for(lambda: client.hget(keys.worker(hostnames[1]), "pid") not in (None, str(pid)),
             30, message="the GPU worker to come back")
    api = fleet.api()
    jobs = [api.submit_ok(simulate("c", seconds=1, vram=40)) for _ in range(4)]
    assert {api.wait(j, timeout=30)["gpu_index"] for j in jobs} == {0, 1}


def test_a_node_killed_mid_job_loses_nothing_and_runs_nothing_twice(fleet: Fleet) -> None:
    # Given a job running on one node, which both can run
    api = fleet.api()
    job_id = api.submit_ok(simulate("b", seconds=4))
    first = wait_for(lambda: (j := api.job(job_id))["status"] == "running" and j, 20)
    victim = fleet.nodes[first["machine_id"]]
    # When that node dies with every process of it (no signal fires)
    victim.kill()
    killed = time.time()
    # Then the lease reaper gives the job to the other node, which completes it
    job = api.wait(job_id, timeout=40)
    assert job["status"] == "completed" and job["machine_id"] != first["machine_id"]
    assert job["attempts"] == 2
    events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    [retry] = [e for e in events if e["type"] == EventType.JOB_RETRYING]
    assert retry["data"]["lost"] == 1 and retry["data"]["error"]["code"] == "WORKER_LOST"
    starts = [e for e in events if e["type"] == EventType.JOB_STARTED]
    assert len(starts) == 2
    restarted = epoch(starts[1]["ts"])
    assert killed < restarted < killed + 30, "taken over within 30 s, after the first run died"
    assert [e["type"] for e in events].count(EventType.JOB_COMPLETED) == 1
    operator = fleet.api("key-operator")
    offline = wait_for(lambda: [e for e in operator.request("GET", "/api/events").json()[
        "events"] if e["type"] == EventType.MACHINE_OFFLINE], 10, message="machine.offline")
    assert offline[-1]["data"]["machine_id"] == first["machine_id"]
    assert operator.request("GET", f"/api/machines/{first['machine_id']}").json()[
        "machine"]["status"] == "offline"
