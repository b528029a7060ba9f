"""What a handler is, and what it gets to do its work.

`Requirements` (tasks/fleet/offers.py) and the errors a run raises (tasks/core/errors.py)
are defined where the core and the fleet use them, and are part of the plugin API
here (tasks/handlers/__init__.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import Schema
from PIL import Image

# LeaseLost and StepStopped are re-exported: plugins written against this module import
# the errors of a run from it.
from tasks.core.errors import JobError, LeaseLost, StepStopped  # noqa: F401
from tasks.fleet.catalog import Catalog
from tasks.fleet.model_cache import ModelCache
from tasks.fleet.offers import Gpu, Requirements
from tasks.storage.artifacts import ArtifactStore, artifact_id_from_url


@dataclass(frozen=True)
class Limits:
    """Bounds that submissions are validated against (from Settings): the one place a
    job and a workflow step both pass through (JobService.validate)."""

    max_prompt_length: int = 2000
    max_image_side: int = 2048
    max_output_side: int = 8192
    max_job_timeout: int = 6 * 3600


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
