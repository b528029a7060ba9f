"""This worker's node: its id, labels, GPUs and models, and the GPU this worker runs on.

A node runs one Celery worker per GPU (workers/node.py starts them), each pinned
to its GPU and consuming the routes that GPU can run; a node without GPUs runs
one CPU worker. The profile is built once at start-up and published with every
heartbeat: the machine record operators read, and the offer placement reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.fleet.catalog import Catalog
from tasks.fleet.offers import Gpu, Offer

DIFFUSION_TYPES = frozenset({"text-to-image", "image-to-image", "controlnet", "upscale"})


@dataclass(frozen=True)
class NodeProfile:
    machine_id: str
    gpus: tuple[Gpu, ...] = ()
    # The GPU this worker runs jobs on; None for a CPU worker.
    gpu: Gpu | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=Catalog)
    # Types served by GPU-backed handlers (their requirements bind) and by
    # handlers that need no GPU.
    gpu_types: frozenset[str] = frozenset()
    cpu_types: frozenset[str] = frozenset()
    detected_by: str = "none"
    driver_version: str = ""
    cuda_version: str = ""

    @classmethod
    def build(cls, machine_id: str, gpus: tuple[Gpu, ...], gpu_index: int | None,
              labels: Mapping[str, str], catalog: Catalog,
              types: Mapping[str, bool], **detected: str) -> NodeProfile:
        """The profile of a worker on GPU `gpu_index` (None: a CPU worker) of a node with
        `gpus`, serving `types` (job type -> whether its handler needs a GPU)."""
        gpu = gpus[gpu_index] if gpu_index is not None else None
        return cls(machine_id, gpus, gpu, dict(labels), catalog,
                   frozenset(t for t, needs in types.items() if needs and gpu is not None),
                   frozenset(t for t, needs in types.items() if not needs), **detected)

    @property
    def serves_diffusion(self) -> bool:
        """Whether this worker runs real models (their libraries load with its pool)."""
        return bool(self.gpu_types & DIFFUSION_TYPES)

    def offer(self) -> Offer:
        """What this worker can run (the operator's labels are added where it is read)."""
        return Offer(self.machine_id, self.gpu_types, self.cpu_types,
                     self.catalog.available(), self.labels,
                     self.gpu.memory_gb if self.gpu else 0.0)

    def with_gpu(self, gpu: Gpu) -> NodeProfile:
        """The same profile with a fresh reading of this worker's GPU."""
        return replace(self, gpu=gpu)

    def machine_record(self) -> dict[str, Any]:
        """The machine's own description, as every worker of the node writes it."""
        return {"id": self.machine_id, "node_labels": dict(self.labels),
                "gpus": [g.as_dict() for g in self.gpus],
                "models_available": sorted(self.catalog.available()),
                "models": self.catalog.describe(),
                "models_unavailable": self.catalog.unavailable(),
                "job_types": sorted(self.gpu_types | self.cpu_types),
                "gpu_job_types": sorted(self.gpu_types),
                "detected_by": self.detected_by, "driver_version": self.driver_version,
                "cuda_version": self.cuda_version}
