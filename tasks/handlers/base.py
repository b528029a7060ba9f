"""What a handler is, and what it gets to do its work."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from marshmallow import Schema
from PIL import Image

from tasks.fleet.catalog import Catalog
from tasks.fleet.model_cache import ModelCache
from tasks.fleet.offers import Gpu
from tasks.storage.artifacts import ArtifactStore, artifact_id_from_url


@dataclass(frozen=True)
class Limits:
    """Bounds that submissions are validated against (from Settings): the one place a
    job and a workflow step both pass through (JobService.validate)."""

    max_prompt_length: int = 2000
    max_image_side: int = 2048
    max_output_side: int = 8192
    max_job_timeout: int = 6 * 3600


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


class JobError(Exception):
    """A failure with a stable code; `retryable=False` fails the job at once."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class LeaseLost(Exception):
    """Another run took this job over: stop without writing an outcome."""


class StepStopped(Exception):
    """The step's workflow is compensating and the handler allows it to stop: the
    step is cancelled, and what it saved so far is deleted."""

    def __init__(self, percent: int) -> None:
        super().__init__(f"stopped at {percent}%")
        self.percent = percent


@dataclass
class JobContext:
    """The job as a handler sees it, plus the means to report and store."""

    job_id: str
    tenant: str
    prompt: str
    parameters: Mapping[str, Any]
    attempt: int
    correlation_id: str
    artifacts: ArtifactStore
    report: Callable[[int], None]
    saved: list[dict[str, Any]] = field(default_factory=list)
    # The GPU this run is pinned to, the models it keeps warm and the node's model
    # catalog (None on a CPU worker).
    gpu: Gpu | None = None
    models: ModelCache | None = None
    catalog: Catalog | None = None
    # How long the job waited in its queue before this run claimed it.
    queue_wait_ms: int | None = None
    # Ask for a fresh pool process once this job ends (its GPU memory did not come back).
    fresh_process: Callable[[], None] | None = None

    def progress(self, percent: float) -> None:
        """Report progress (0-100); raises LeaseLost if this run was superseded."""
        self.report(max(0, min(100, int(percent))))

    def input_image(self) -> Image.Image:
        """The image named by `image_url`, which must be one of the tenant's artifacts."""
        url = self.parameters.get("image_url")
        artifact_id = artifact_id_from_url(url) if url else None
        artifact = self.artifacts.get(artifact_id, self.tenant) if artifact_id else None
        if artifact is None:
            raise JobError("INPUT_NOT_FOUND", f"input image {url!r} was not found")
        return self.artifacts.load(artifact)

    def save(self, image: Image.Image) -> dict[str, Any]:
        public = self.artifacts.save_image(image, self.tenant, self.job_id).public()
        self.saved.append(public)
        return public


@dataclass(frozen=True)
class CompensationContext:
    """A completed step as its compensation sees it: what it was asked and what it made.

    `attempt` counts every attempt at compensating this step, operator retries
    included. A compensation may run more than once (a retry, a lost worker),
    so it must be idempotent: undoing what is already undone is success.
    """

    job_id: str
    tenant: str
    parameters: Mapping[str, Any]
    result: Mapping[str, Any]
    attempt: int
    correlation_id: str
    artifacts: ArtifactStore


class Handler(ABC):
    """One job type. Subclasses set `type` and `parameters` and implement `run`;
    a handler whose work outlives its artifacts (a charge, a post) overrides
    `compensate` to undo it."""

    type: ClassVar[str]
    prompt_required: ClassVar[bool] = False
    base_gpu_memory: ClassVar[int] = 4
    model_type: ClassVar[str] = ""
    # A handler that runs on a GPU is served only by GPU workers, and only where the
    # job's requirements (memory, model) fit; one that needs none runs anywhere.
    uses_gpu: ClassVar[bool] = False
    # Report every progress step (a diffusion step), not at most four times a second.
    report_every_step: ClassVar[bool] = False

    @abstractmethod
    def parameters(self, limits: Limits) -> Schema:
        """The marshmallow schema that validates and fills in `parameters`."""

    @abstractmethod
    def run(self, ctx: JobContext) -> dict[str, Any]:
        """Do the work; return the job's result (JSON-serialisable)."""

    def compensate(self, ctx: CompensationContext) -> dict[str, Any]:
        """Undo a completed step (a saga's compensation); the default deletes the
        artifacts it produced. Raise to fail the attempt (it is retried)."""
        return {"deleted_artifacts": ctx.artifacts.delete_job_artifacts(ctx.job_id)}

    def interruptible(self, params: Mapping[str, Any]) -> bool:
        """Whether a run may stop at its next progress report when its workflow
        compensates; if not, the compensation waits for the run to finish."""
        return True

    def requirements(self, params: Mapping[str, Any]) -> Requirements:
        """The seed's analysis: base memory by type, more for quality and batches."""
        memory = self.base_gpu_memory
        if params.get("high_quality"):
            memory += 4
        batch = int(params.get("batch_size") or 1)
        if batch > 1:
            memory += (batch - 1) * 2
        return Requirements(memory, self.model_type or self.type, [self.type])

    def input_size(self, params: Mapping[str, Any], size: tuple[int, int]) -> tuple[int, int]:
        """The output size for an input image of `size` (checked at submit time)."""
        return size
