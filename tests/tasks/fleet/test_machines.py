"""Machines and routes in Redis: beats, drains, the operator's labels, and why jobs wait."""

from __future__ import annotations

import time
from typing import Any

import redis

from tasks.core.events import EVERYTHING, EventLog, EventType
from tasks.fleet.catalog import Catalog, CatalogModel
from tasks.fleet.machines import MachineStore
from tasks.fleet.offers import Gpu, Route
from tasks.fleet.profile import NodeProfile
from tasks.fleet.routes import RouteStore, route_fields
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.store import JobStore
from tests.tasks.conftest import new_job

FAR = 2**62
CATALOG = Catalog({"sdxl": CatalogModel("sdxl", vram_gb=10)})
TYPES = {"simulate": True, "echo": False}


def gpu_node(machine_id: str = "m1", memory_gb: int = 24, index: int = 0) -> NodeProfile:
    gpus = tuple(Gpu(i, "RTX-4090", memory_gb * 1024) for i in range(index + 1))
    return NodeProfile.build(machine_id, gpus, index, {"zone": "eu"}, CATALOG, TYPES,
                             detected_by="declared")


def cpu_node(machine_id: str = "c1") -> NodeProfile:
    return NodeProfile.build(machine_id, (), None, {}, Catalog(), TYPES)


def events(client: redis.Redis) -> list[dict[str, Any]]:
    return EventLog(client).read(EVERYTHING)


def machine_events(client: redis.Redis) -> list[tuple[str, str, str]]:
    return [(e["type"], e["data"]["machine_id"], e["data"]["status"]) for e in events(client)
            if e["type"].startswith("machine.")]


def test_a_machine_is_online_while_a_worker_beats_and_offline_when_the_last_goes(
        client: redis.Redis) -> None:
    store = MachineStore(client, liveness_s=1, retention_s=60)
    node = gpu_node(index=1)
    store.beat("w0@m1", {}, gpu_node(index=0), {})
    store.beat("w1@m1", {}, node, {})
    assert store.describe("m1")["status"] == "online"  # type: ignore[index]
    # w1 is shut down: the machine stays online on w0
    store.gone("w1@m1")
    time.sleep(1.1)
    # w0 stops beating (SIGKILL); another machine's beat sees it gone, and m1 with it
    assert store.beat("c@c1", {}, cpu_node(), {}) == ["w0@m1"]
    assert machine_events(client) == [
        (EventType.MACHINE_ONLINE, "m1", "online"), (EventType.MACHINE_ONLINE, "c1", "online"),
        (EventType.MACHINE_OFFLINE, "m1", "offline")]
    offline = next(e for e in events(client) if e["type"] == EventType.MACHINE_OFFLINE)
    assert offline["data"]["reason"] == "heartbeat_lost" and offline["tenant"] is None
    view = store.describe("m1")
    assert view is not None and view["status"] == "offline" and view["workers"] == []


def test_the_machine_view_has_its_gpus_models_and_running_jobs(
        client: redis.Redis, store: JobStore, lifecycle: Lifecycle) -> None:
    machines = MachineStore(client, liveness_s=5, retention_s=60)
    node = gpu_node()
    machines.beat("w0@m1", {}, node, {})
    machines.publish_models("w0@m1", [{"name": "sdxl", "vram_gb": 10, "state": "loaded"}])
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w0@m1", "m1", FAR, placement={"gpu_index": 0})
    view = machines.describe("m1")
    assert view is not None
    assert {k: view[k] for k in ("id", "status", "labels", "models_available", "job_types",
                                 "gpu_job_types", "running_jobs", "workers")} == {
        "id": "m1", "status": "online", "labels": {"zone": "eu"},
        "models_available": ["sdxl"], "job_types": ["echo", "simulate"],
        "gpu_job_types": ["simulate"], "running_jobs": ["j1"], "workers": ["w0@m1"]}
    [gpu] = view["gpus"]
    assert gpu["name"] == "RTX-4090" and gpu["memory_total_mb"] == 24 * 1024
    # a declared GPU has no driver readings: memory and load are accounted
    assert gpu["memory_free_mb"] == 14 * 1024 and gpu["utilization"] == 100
    assert gpu["models_loaded"] == ["sdxl"] and gpu["running_jobs"] == ["j1"]
    assert store.get("j1")["gpu_index"] == 0  # type: ignore[index]


def test_drain_and_resume_survive_a_restart_and_say_so(client: redis.Redis) -> None:
    machines = MachineStore(client, liveness_s=5, retention_s=60)
    machines.beat("w0@m1", {}, gpu_node(), {})
    assert machines.set_drain("m1", True)
    assert machines.describe("m1")["status"] == "draining"  # type: ignore[index]
    assert machines.operator_state("m1") == ({}, True)
    own = machines.own_state("w0@m1", "m1")
    assert (own.operator_labels, own.draining) == ({}, True)
    [slot] = machines.slots()
    assert slot.offer.draining
    # the worker restarts: the machine comes back still draining
    machines.gone("w0@m1")
    machines.beat("w0@m1", {}, gpu_node(), {})
    assert machines.describe("m1")["status"] == "draining"  # type: ignore[index]
    assert machines.set_drain("m1", False)
    assert machines.describe("m1")["status"] == "online"  # type: ignore[index]
    assert not machines.set_drain("nope", True)
    assert [t for t, *_ in machine_events(client)] == [
        EventType.MACHINE_ONLINE, EventType.MACHINE_DRAINING, EventType.MACHINE_OFFLINE,
        EventType.MACHINE_ONLINE, EventType.MACHINE_ONLINE]


def test_an_operator_registers_labels_before_the_node_comes_online(
        client: redis.Redis) -> None:
    machines = MachineStore(client, liveness_s=5, retention_s=60)
    assert machines.register("m1", {"tier": "gold", "zone": "us"})
    assert machines.describe("m1")["status"] == "offline"  # type: ignore[index]
    assert not machines.register("m1", {"tier": "gold", "zone": "us"})
    machines.beat("w0@m1", {}, gpu_node(), {})
    view = machines.describe("m1")
    assert view is not None and view["labels"] == {"zone": "us", "tier": "gold"}
    [slot] = machines.slots()
    assert slot.offer.labels == {"zone": "us", "tier": "gold"}


def test_machine_updates_are_rate_limited(client: redis.Redis) -> None:
    machines = MachineStore(client, liveness_s=5, retention_s=60, update_interval_ms=300)
    machines.beat("w0@m1", {}, gpu_node(), {"running_jobs": 0})
    machines.beat("w0@m1", {}, gpu_node(), {"running_jobs": 1})  # too soon after online
    time.sleep(0.35)
    machines.publish_models("w0@m1", [{"name": "sdxl", "vram_gb": 10, "state": "loaded"}])
    machines.beat("w0@m1", {}, gpu_node(), {"running_jobs": 1})
    machines.beat("w0@m1", {}, gpu_node(), {"running_jobs": 0})  # too soon after that one
    updates = [e["data"] for e in events(client) if e["type"] == EventType.MACHINE_UPDATED]
    assert len(updates) == 1 and updates[0]["worker"] == "w0@m1"
    assert updates[0]["running_jobs"] == 1 and updates[0]["models_loaded"][0]["name"] == "sdxl"


def test_a_route_counts_its_pending_jobs_and_says_why_they_wait(
        client: redis.Redis, store: JobStore, lifecycle: Lifecycle) -> None:
    routes = RouteStore(client)
    big = Route("simulate", 200, "sdxl")
    fields = route_fields(big, "q")
    job = new_job(job_type="simulate")
    store.create("j1", job.__class__(**{**job.__dict__, "route": fields}), outbox_due_ms=None)
    assert list(routes.registered()) == [fields["route"]]
    [waiting] = routes.waiting(routes.registered())
    assert waiting.pending == 1 and waiting.oldest_ms is not None
    machines = MachineStore(client, liveness_s=5, retention_s=60)
    machines.beat("w0@m1", {}, gpu_node(), {})
    assert routes.explain_all(machines.offers(max_age=0)) == 1
    assert routes.explain_all(machines.offers(max_age=0)) == 0, "only what changed"
    assert store.get("j1")["waiting_reason"] == (  # type: ignore[index]
        "no online machine has 200 GB of GPU memory")
    unschedulable = [e for e in events(client) if e["type"] == EventType.JOB_UNSCHEDULABLE]
    assert [e["job_id"] for e in unschedulable] == ["j1"]
    # a node that fits comes online: the reason goes
    machines.beat("w0@big", {}, gpu_node("big", memory_gb=256), {})
    assert routes.explain_all(machines.offers(max_age=0)) == 1
    assert "waiting_reason" not in store.get("j1").fields  # type: ignore[union-attr]
    # claimed: no longer pending on its route
    lifecycle.claim("j1", "tok", "w0@big", "big", FAR)
    assert routes.waiting(routes.registered())[0].pending == 0


def test_idle_routes_are_forgotten_but_never_with_a_job_pending(
        client: redis.Redis, store: JobStore) -> None:
    routes = RouteStore(client)
    fields = route_fields(Route("echo", 4), "q")
    job = new_job()
    store.create("j1", job.__class__(**{**job.__dict__, "route": fields}), outbox_due_ms=None)
    assert routes.forget_idle(int(time.time() * 1000) + 1000) == 0
    store.cancel("j1", "t1", "no longer needed")
    assert routes.forget_idle(int(time.time() * 1000) + 1000) == 1
    assert routes.registered() == {}
