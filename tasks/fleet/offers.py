"""The fleet's vocabulary: what a GPU slot offers, what a job needs, and whether they fit.

A job's needs reduce to a `Route`: its type, the GPU memory and model it needs
when a GPU-backed handler serves it, and the labels its node must carry. Each
route is one Celery queue, so a worker consumes exactly the routes it can run
and no job is ever delivered where it cannot start. An `Offer` is what one
worker (one GPU slot, or a CPU-only worker) can run; `refusal` says why a route
does not fit it, and `unplaceable` why no online worker of the fleet fits it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.core.names import MODEL_NAME, SAFE_NAME


@dataclass(frozen=True)
class Gpu:
    """One GPU of a node: what it is, and (when it can be read) how it is doing."""

    index: int
    name: str
    memory_total_mb: int
    uuid: str = ""
    memory_free_mb: int | None = None
    utilization: int | None = None
    temperature: int | None = None

    @property
    def memory_gb(self) -> float:
        return self.memory_total_mb / 1024

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "uuid": self.uuid,
                "memory_total_mb": self.memory_total_mb, "memory_free_mb": self.memory_free_mb,
                "utilization": self.utilization, "temperature": self.temperature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gpu:
        return cls(int(data["index"]), str(data["name"]), int(data["memory_total_mb"]),
                   str(data.get("uuid") or ""), data.get("memory_free_mb"),
                   data.get("utilization"), data.get("temperature"))


Labels = tuple[tuple[str, str], ...]


def label_pairs(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


@dataclass(frozen=True)
class Route:
    """A class of jobs that the same workers can run: one Celery queue.

    `gpu_memory` (GB) binds only where a GPU-backed handler serves the type; a named
    `model` binds everywhere (a preview painter cannot run "sdxl", so it takes only
    jobs that name none); `labels` always bind (they select nodes).
    """

    job_type: str
    gpu_memory: int
    model: str = ""
    labels: Labels = ()

    def queue(self, base: str) -> str:
        """The queue's name: readable, unique per route, and free of ':' (the Redis
        transport's priority separator)."""
        name = f"{base}.{_safe(self.job_type)}.{_safe(self.model) if self.model else '_'}"
        name += f".{self.gpu_memory}g"
        if self.labels:
            name += "." + _digest(json.dumps(self.labels))
        return name

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.job_type, "gpu_memory": self.gpu_memory, "model": self.model,
                "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        return cls(str(data["type"]), int(data["gpu_memory"]), str(data.get("model") or ""),
                   label_pairs(data.get("labels")))

    def describe_labels(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels)


def _safe(text: str) -> str:
    if SAFE_NAME.match(text) or MODEL_NAME.match(text):
        return text
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:40] + "~" + _digest(text)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Offer:
    """What one worker can run: the types it serves with and without a GPU, the
    models its node has (name -> the job types each may serve, empty for any),
    its labels, and its GPU's memory (0 for a CPU-only worker)."""

    machine_id: str
    gpu_types: frozenset[str] = frozenset()
    cpu_types: frozenset[str] = frozenset()
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_memory_gb: float = 0.0
    draining: bool = False

    def refusal(self, route: Route) -> str | None:
        """Why this worker cannot run `route`'s jobs, or None when it can."""
        if self.draining:
            return "draining"
        if route.job_type not in self.cpu_types | self.gpu_types:
            return f"does not serve {route.job_type} jobs"
        missing = [f"{k}={v}" for k, v in route.labels if self.labels.get(k) != v]
        if missing:
            return f"lacks labels {','.join(missing)}"
        if route.job_type in self.gpu_types and self.gpu_memory_gb + 1e-9 < route.gpu_memory:
            return f"has {self.gpu_memory_gb:g} GB of GPU memory"
        if route.model and not self.has_model(route.model, route.job_type):
            return f"does not have model {route.model}"
        return None

    def accepts(self, route: Route) -> bool:
        return self.refusal(route) is None

    def has_model(self, model: str, job_type: str) -> bool:
        types = self.models.get(model)
        return types is not None and (not types or job_type in types)

    def as_dict(self) -> dict[str, Any]:
        return {"machine_id": self.machine_id, "gpu_types": sorted(self.gpu_types),
                "cpu_types": sorted(self.cpu_types), "gpu_memory_gb": self.gpu_memory_gb,
                "models": {m: sorted(t) for m, t in self.models.items()},
                "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                  draining: bool = False) -> Offer:
        """`labels` (the operator's, from the machine record) add to and override the
        node's own."""
        return cls(str(data["machine_id"]), frozenset(data.get("gpu_types") or ()),
                   frozenset(data.get("cpu_types") or ()),
                   {m: frozenset(t) for m, t in (data.get("models") or {}).items()},
                   {**(data.get("labels") or {}), **(labels or {})},
                   float(data.get("gpu_memory_gb") or 0), draining)


def unplaceable(route: Route, offers: Iterable[Offer]) -> str | None:
    """Why no online worker can run `route`'s jobs, or None when one can.

    The reason names the first requirement that rules out the last candidates,
    in the order type, labels, GPU memory, model, so it says what to add.
    """
    offers = list(offers)
    reason = _missing(route, [o for o in offers if not o.draining])
    if reason and _missing(route, [o for o in offers if o.draining]) is None:
        return "every online machine that could run it is draining"
    return reason


def _missing(route: Route, candidates: list[Offer]) -> str | None:
    if not candidates:
        return "no machine is online"
    serving = [o for o in candidates if route.job_type in o.cpu_types | o.gpu_types]
    if not serving:
        return f"no online machine serves {route.job_type} jobs"
    labelled = [o for o in serving if all(o.labels.get(k) == v for k, v in route.labels)]
    if not labelled:
        return f"no online machine has labels {route.describe_labels()}"
    roomy = [o for o in labelled if route.job_type in o.cpu_types
             or o.gpu_memory_gb + 1e-9 >= route.gpu_memory]
    if not roomy:
        return f"no online machine has {route.gpu_memory} GB of GPU memory"
    if route.model and not any(o.has_model(route.model, route.job_type) for o in roomy):
        return (f"no online machine with {route.gpu_memory} GB of GPU memory "
                f"has model {route.model}")
    return None


@dataclass(frozen=True)
class Requirements:
    """What a job needs from a worker, stored with the job; its route (tasks/fleet/offers.py)
    sends it only where it fits. `gpu_memory` is in GB."""

    gpu_memory: int
    model_type: str
    capabilities: list[str]
    model: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"gpu_memory": self.gpu_memory, "model_type": self.model_type,
                                "capabilities": list(self.capabilities)}
        if self.model:
            data["model"] = self.model
        if self.labels:
            data["labels"] = dict(self.labels)
        return data

    def for_model(self, base_gb: int, vram_gb: float) -> Requirements:
        """With a known model: its memory replaces the type's estimate (`base_gb`); what
        quality and batches add stays."""
        return replace(self, gpu_memory=self.gpu_memory - base_gb + math.ceil(vram_gb))

    def raised_by(self, request: Mapping[str, Any]) -> Requirements:
        """These requirements with a submission's `requirements` object applied: it may
        raise the GPU memory, never lower it; name a model, unless the handler names
        another; and add labels. Raises ValueError on a conflicting model."""
        model = request.get("model") or ""
        if model and self.model and model != self.model:
            raise ValueError(f"names model {model}, but the job runs model {self.model}")
        return replace(self, gpu_memory=max(self.gpu_memory, request.get("gpu_memory") or 0),
                       model=self.model or model, labels=dict(request.get("labels") or {}))
