"""Machines (the seed's MachineService): the fleet's nodes, as their workers describe them.

Every worker beats its own record and its machine's in one script
(tasks/fleet/lua/worker_beat.lua): a machine is online while one of its workers beats, and
goes offline, with an event, when the last one stops (a shutdown says so at
once; a lost worker is noticed by any other worker's next beat, within the
liveness window). Operators pre-register a machine's labels, and drain and
resume it; the drain flag lives on the machine, so it outlives restarts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.scripts import Scripts
from tasks.fleet.offers import Offer
from tasks.fleet.placement import LoadedModel, Slot
from tasks.fleet.profile import NodeProfile
from tasks.fleet.refresh import RouteRefresh

# How often, at most, a machine says what changed on it (machine.updated).
UPDATE_INTERVAL_MS = 5000


class DrainReply(StrEnum):
    """What machine_drain.lua answers."""

    OK = "ok"
    MISSING = "missing"


@dataclass(frozen=True)
class OwnState:
    """What a worker reads of its own before it pulls again: its record as its pool
    process wrote it (the models its GPU holds, most recently used first; the models that
    failed to load; a pool process that asks to be replaced), and the operator's word on
    its machine (labels, drain)."""

    models: tuple[LoadedModel, ...] = ()
    broken: dict[str, str] = field(default_factory=dict)
    fresh_process: int | None = None
    operator_labels: dict[str, str] = field(default_factory=dict)
    draining: bool = False


def loaded_models(raw: str | None) -> tuple[LoadedModel, ...]:
    """A worker record's `models_loaded` (JSON) as placement sees it."""
    return tuple(LoadedModel(m["name"], float(m["vram_gb"])) for m in json.loads(raw or "[]"))


@dataclass(frozen=True)
class LiveWorker:
    hostname: str
    record: Mapping[str, str]
    running_jobs: list[str]

    def gpu(self) -> dict[str, Any] | None:
        gpu: dict[str, Any] | None = json.loads(self.record.get("gpu") or "null")
        return gpu

    def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = json.loads(self.record.get("models_loaded") or "[]")
        return models


class MachineStore:
    def __init__(self, client: redis.Redis, liveness_s: float, retention_s: int,
                 update_interval_ms: int = UPDATE_INTERVAL_MS) -> None:
        self._redis = client
        self._update_interval_ms = update_interval_ms
        self._scripts = Scripts(client)
        self._liveness_ms = int(liveness_s * 1000)
        self._retention = retention_s
        # Reads that callers may take a little stale: name -> (when read, what).
        self._cache: dict[str, tuple[float, Any]] = {}

    def beat(self, hostname: str, worker: Mapping[str, Any], profile: NodeProfile,
             update: Mapping[str, Any]) -> list[str]:
        """Refresh a worker's record and its machine's; returns the workers found gone."""
        record = {**worker, "machine_id": profile.machine_id,
                  "machine_key": keys.machine(profile.machine_id),
                  "machine_workers_key": keys.machine_workers(profile.machine_id),
                  "offer": json.dumps(profile.offer().as_dict()),
                  "gpu": json.dumps(profile.gpu.as_dict() if profile.gpu else None)}
        digest = json.dumps(update, sort_keys=True)
        gone = self._scripts.worker_beat(
            keys=[keys.worker(hostname), keys.WORKERS, keys.machine(profile.machine_id),
                  keys.MACHINES, keys.machine_workers(profile.machine_id)],
            args=[hostname, json.dumps(record), self._liveness_ms / 1000, now_ms(), iso(),
                  json.dumps(_flat(profile.machine_record())), self._retention, digest,
                  self._update_interval_ms, json.dumps({"worker": hostname, **update})])
        return [str(g) for g in gone]

    def gone(self, hostname: str) -> None:
        """A worker shut down: it, and its machine if it was the last, go offline now."""
        self._scripts.worker_gone(keys=[keys.worker(hostname), keys.WORKERS],
                                  args=[hostname, iso(), self.liveness_cutoff()])

    def publish_models(self, hostname: str, models: list[dict[str, Any]]) -> None:
        self._publish(hostname, "models_loaded", models)

    def publish_broken(self, hostname: str, broken: dict[str, str]) -> None:
        """The models that failed to load on a worker (name -> why): its node withdraws them."""
        self._publish(hostname, "models_broken", broken)

    def ask_fresh_process(self, hostname: str, pid: int) -> None:
        """A pool process whose GPU memory did not come back asks to be replaced."""
        self._publish(hostname, "fresh_process", pid)

    def _publish(self, hostname: str, name: str, value: Any) -> None:
        self._scripts.worker_report(keys=[keys.worker(hostname)],
                                    args=[name, json.dumps(value)])

    def own_state(self, hostname: str, machine_id: str) -> OwnState:
        """A worker's own record and its machine's operator state, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(keys.worker(hostname), ["models_loaded", "models_broken", "fresh_process"])
        pipe.hmget(keys.machine(machine_id), ["operator_labels", "drain"])
        (models, broken, fresh), (labels, drain) = cast(list[list[str | None]], pipe.execute())
        return OwnState(loaded_models(models), json.loads(broken or "{}"),
                        int(fresh) if fresh else None, json.loads(labels or "{}"),
                        drain == "1")

    def forget_fresh_process(self, hostname: str) -> None:
        self._redis.hdel(keys.worker(hostname), "fresh_process")

    def register(self, machine_id: str, labels: Mapping[str, str]) -> bool:
        """Record an operator's labels for a machine; True when it was new."""
        return bool(self._scripts.machine_register(
            keys=[keys.machine(machine_id), keys.MACHINES],
            args=[machine_id, json.dumps(dict(labels)), iso(), self._retention]))

    def set_drain(self, machine_id: str, drain: bool) -> bool:
        """Drain or resume a machine; False when it is unknown."""
        outcome, _status = self._scripts.machine_drain(
            keys=[keys.machine(machine_id)], args=["1" if drain else "0", iso()])
        return DrainReply(outcome) is DrainReply.OK

    def live_workers(self) -> list[str]:
        """Every worker whose heartbeat is live, fleet-wide."""
        return [str(h) for h in
                self._redis.zrangebyscore(keys.WORKERS, self.liveness_cutoff(), "+inf")]

    def live_boots(self) -> dict[str, str | None]:
        """Every live worker -> the boot id of the process that beats for it."""
        hostnames = self.live_workers()
        pipe = self._redis.pipeline(transaction=False)
        for hostname in hostnames:
            pipe.hget(keys.worker(hostname), "boot")
        return dict(zip(hostnames, pipe.execute(), strict=True))

    def hostnames(self, machine_id: str) -> list[str]:
        """The machine's live workers."""
        return [str(h) for h in self._redis.zrangebyscore(
            keys.machine_workers(machine_id), self.liveness_cutoff(), "+inf")]

    def describe(self, machine_id: str) -> dict[str, Any] | None:
        views = self._describe([machine_id])
        return views[0] if views else None

    def describe_all(self) -> list[dict[str, Any]]:
        return self._describe(sorted(str(m) for m in self._redis.zrange(keys.MACHINES, 0, -1)))

    def _describe(self, machine_ids: Sequence[str]) -> list[dict[str, Any]]:
        pipe = self._redis.pipeline(transaction=False)
        cutoff = self.liveness_cutoff()
        for machine_id in machine_ids:
            pipe.hgetall(keys.machine(machine_id))
            pipe.zrangebyscore(keys.machine_workers(machine_id), cutoff, "+inf")
        replies = pipe.execute()
        records = cast(list[dict[str, str]], replies[::2])
        workers = self._workers(sorted({str(h) for hosts in replies[1::2] for h in hosts}))
        return [machine_view(raw, [workers[str(h)] for h in hosts if str(h) in workers])
                for raw, hosts in zip(records, replies[1::2], strict=True) if raw]

    def _workers(self, hostnames: Sequence[str]) -> dict[str, LiveWorker]:
        pipe = self._redis.pipeline(transaction=False)
        for hostname in hostnames:
            pipe.hgetall(keys.worker(hostname))
            pipe.smembers(keys.worker_jobs(hostname))
        replies = pipe.execute()
        return {h: LiveWorker(h, record, sorted(jobs))
                for h, record, jobs in zip(hostnames, replies[::2], replies[1::2], strict=True)
                if record}

    def slots(self, max_age: float = 0.0) -> list[Slot]:
        """Every live worker as placement sees it (operator labels and drains applied),
        read at most every `max_age` seconds."""
        slots: list[Slot] = self._cached("slots", max_age, self._read_slots)
        return slots

    def _read_slots(self) -> list[Slot]:
        workers = [w for w in self._workers(self.live_workers()).values()
                   if w.record.get("offer")]
        pipe = self._redis.pipeline(transaction=False)
        machines = sorted({w.record["machine_id"] for w in workers})
        for machine_id in machines:
            pipe.hmget(keys.machine(machine_id), ["operator_labels", "drain"])
        operator = dict(zip(machines, pipe.execute(), strict=True))
        return [_slot(w, *operator[w.record["machine_id"]]) for w in workers]

    def offers(self, max_age: float = 1.0) -> list[Offer]:
        """The live workers' offers, read at most every `max_age` seconds."""
        return [s.offer for s in self.slots(max_age)]

    def known_models(self, max_age: float = 2.0) -> dict[str, dict[str, Any]]:
        """Every model any registered machine has (name -> types, vram_gb, base, default),
        read at most every `max_age` seconds; online machines' word wins."""
        known: dict[str, dict[str, Any]] = self._cached("models", max_age, self._read_models)
        return known

    def _read_models(self) -> dict[str, dict[str, Any]]:
        machine_ids = [str(m) for m in self._redis.zrange(keys.MACHINES, 0, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for machine_id in machine_ids:
            pipe.hmget(keys.machine(machine_id), ["models", "status"])
        known: dict[str, dict[str, Any]] = {}
        for models, _status in sorted(pipe.execute(), key=lambda r: r[1] != "offline"):
            known.update(json.loads(models or "{}"))
        return known

    def _cached(self, name: str, max_age: float, read: Callable[[], Any]) -> Any:
        taken, value = self._cache.get(name, (float("-inf"), None))
        if time.monotonic() - taken > max_age:
            value = read()
            self._cache[name] = (time.monotonic(), value)
        return value

    def operator_state(self, machine_id: str) -> tuple[dict[str, str], bool]:
        """The operator's labels for a machine, and whether it is draining."""
        labels, drain = self._redis.hmget(keys.machine(machine_id), ["operator_labels", "drain"])
        return json.loads(labels or "{}"), drain == "1"

    def liveness_cutoff(self) -> int:
        """When (ms) a worker must have beaten since to count as live."""
        return now_ms() - self._liveness_ms


def _slot(worker: LiveWorker, operator_labels: str | None, drain: str | None) -> Slot:
    offer = Offer.from_dict(json.loads(worker.record["offer"]),
                            labels=json.loads(operator_labels or "{}"), draining=drain == "1")
    return Slot(worker.hostname, offer, loaded_models(worker.record.get("models_loaded")),
                busy=bool(worker.running_jobs))


def _flat(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record for a Redis hash: structured values as JSON."""
    return {k: v if isinstance(v, str | int | float) else json.dumps(v)
            for k, v in record.items()}


def machine_view(raw: Mapping[str, str], workers: Sequence[LiveWorker]) -> dict[str, Any]:
    """A machine as GET /api/machines shows it: its GPUs with what each holds and runs."""
    by_gpu = {gpu["index"]: w for w in workers if (gpu := w.gpu()) is not None}
    gpus = [_gpu_view(gpu, by_gpu.get(gpu["index"])) for gpu in json.loads(raw.get("gpus") or "[]")]
    status = raw.get("status", "offline") if workers else "offline"
    labels = {**json.loads(raw.get("node_labels") or "{}"),
              **json.loads(raw.get("operator_labels") or "{}")}
    return {
        "id": raw.get("id"), "status": status, "labels": labels, "gpus": gpus,
        "models_available": json.loads(raw.get("models_available") or "[]"),
        "models_unavailable": json.loads(raw.get("models_unavailable") or "{}"),
        "job_types": json.loads(raw.get("job_types") or "[]"),
        "gpu_job_types": json.loads(raw.get("gpu_job_types") or "[]"),
        "running_jobs": sorted(j for w in workers for j in w.running_jobs),
        "workers": [w.hostname for w in workers],
        "last_seen": raw.get("last_seen"), "registered_at": raw.get("registered_at"),
        "detected_by": raw.get("detected_by"), "driver_version": raw.get("driver_version") or None,
        "cuda_version": raw.get("cuda_version") or None,
    }


def _gpu_view(gpu: dict[str, Any], worker: LiveWorker | None) -> dict[str, Any]:
    """One GPU; where no driver reports its memory and load (a declared GPU), both are
    accounted from what it holds and runs."""
    if worker is None:
        return {**gpu, "memory_free_mb": None, "utilization": None, "models_loaded": [],
                "worker": None, "running_jobs": []}
    live = worker.gpu() or gpu
    models = worker.models()
    free = live.get("memory_free_mb")
    if free is None:
        used = sum(float(m.get("vram_gb") or 0) for m in models) * 1024
        free = max(0, int(gpu["memory_total_mb"] - used))
    utilization = live.get("utilization")
    if utilization is None:
        utilization = 100 if worker.running_jobs else 0
    return {**gpu, "memory_free_mb": free, "utilization": utilization,
            "temperature": live.get("temperature"),
            "models_loaded": [m["name"] for m in models if m.get("state") != "loading"],
            "models_loading": [m["name"] for m in models if m.get("state") == "loading"],
            "worker": worker.hostname, "running_jobs": worker.running_jobs}


@dataclass
class MachineService:
    """What operators do to machines: each change is told to the machine's workers at
    once, so a drain stops new jobs there within moments."""

    store: MachineStore
    refresh: RouteRefresh

    def register(self, machine_id: str, labels: Mapping[str, str]) -> bool:
        created = self.store.register(machine_id, labels)
        self._tell(machine_id)
        return created

    def drain(self, machine_id: str, drain: bool = True) -> bool:
        """Drain (or resume) a machine; False when it is unknown."""
        if not self.store.set_drain(machine_id, drain):
            return False
        self._tell(machine_id)
        return True

    def _tell(self, machine_id: str) -> None:
        if hostnames := self.store.hostnames(machine_id):
            self.refresh.ask(hostnames)
