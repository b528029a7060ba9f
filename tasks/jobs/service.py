"""Job submission and cancellation: validation that needs the registry and the store.

A job is either stored and published, or not stored at all: when the publish
fails the record is removed before the caller hears of it, and a crash between
the two is covered by the outbox (the reaper publishes it again).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from tasks.core.errors import Conflict, NotFound, Unavailable, ValidationFailed
from tasks.core.settings import Settings
from tasks.fleet.catalog import default_model
from tasks.fleet.machines import MachineStore
from tasks.fleet.offers import Requirements, Route, unplaceable
from tasks.fleet.routes import route_fields, route_for
from tasks.handlers.base import Handler
from tasks.handlers.images import ImageJob
from tasks.handlers.registry import HandlerRegistry
from tasks.jobs.dispatch import Dispatcher, JobCall
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.replies import TransitionReply
from tasks.jobs.store import Job, JobStore, NewJob
from tasks.storage.artifacts import ArtifactStore, artifact_id_from_url
from tasks.storage.quotas import Admission, PriorityTooHigh, Quotas, Refused
from tasks.webhooks import egress
from tasks.webhooks.store import WebhookStore, categories_of


class InvalidJob(ValidationFailed):
    """The request is well-formed but names something we cannot run."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__(errors, code="JOB_SUBMISSION_FAILED", what="Job")


class StepOfWorkflow(Conflict):
    """The job is a workflow step: it is cancelled with its workflow."""

    default_code = "JOB_NOT_CANCELLABLE"


class BrokerUnavailable(Unavailable):
    """The broker refused the message; nothing was stored."""

    default_code = "BROKER_UNAVAILABLE"

    def __init__(self, what: str) -> None:
        super().__init__(f"The message broker is unavailable; the {what} was not accepted")


@dataclass(frozen=True)
class Validated:
    """A job request that passed validation: what runs it, with what, and where."""

    handler: Handler
    parameters: dict[str, Any]
    requirements: Requirements
    route: Route


@dataclass(frozen=True)
class CancelResult:
    cancelled: bool
    status: str


@dataclass
class JobService:
    store: JobStore
    registry: HandlerRegistry
    artifacts: ArtifactStore
    dispatcher: Dispatcher
    lifecycle: Lifecycle
    machines: MachineStore
    settings: Settings
    quotas: Quotas
    webhooks: WebhookStore

    def submit(self, tenant: str, request: Mapping[str, Any], correlation_id: str) -> Job:
        """Validate against the handler, store the job, publish it to its route's queue."""
        valid = self.validate(tenant, request)
        self._check_workflow(tenant, request)
        self.check_webhook(tenant, request)
        admission = self.admission(tenant, [request["priority"]])
        new = NewJob(
            tenant=tenant, type=valid.handler.type, prompt=request.get("prompt"),
            parameters=valid.parameters, priority=request["priority"],
            requirements=valid.requirements.as_dict(), correlation_id=correlation_id,
            timeout=request.get("timeout_seconds") or self.settings.job_timeout,
            retries=request["retries"], webhook_url=request.get("webhook_url"),
            webhook_events=categories_of(request),
            workflow_id=request.get("workflow_id"),
            route=route_fields(valid.route, self.settings.queue),
            waiting_reason=self.waiting_reason(valid.route),
        )
        return self._store_and_queue(str(uuid.uuid4()), new, admission)

    def _store_and_queue(self, job_id: str, new: NewJob, admission: Admission | None) -> Job:
        """Admit, store and queue the job in one script where the broker is the job
        store's Redis; elsewhere publish once it is stored (the outbox covers a crash
        between the two, and a refused publish removes the record)."""
        message = self.dispatcher.prepare(JobCall(
            job_id, new.route["route"], new.priority, new.timeout, new.correlation_id))
        try:
            job = self.store.create(job_id, new, message=message, admission=admission,
                                    outbox_due_ms=None if message else self.lifecycle.outbox_due())
        except Refused as exc:
            self.quotas.refuse(exc.outcome, exc.detail)
            raise
        if message is not None:
            self.dispatcher.refresh.announce([new.route["route"]])
            return job
        try:
            self.dispatcher.publish(job)
        except Exception as exc:
            self.store.delete(job_id)
            raise BrokerUnavailable("job") from exc
        return job

    def cancel(self, job_id: str, tenant: str, reason: str,
               terminate: bool = False) -> CancelResult:
        """Cancel a job that has not started; with `terminate`, a running one too: it stops
        at its next progress report (a diffusion step), and what it made is discarded."""
        job = self.store.get(job_id, tenant)
        if job is not None and job.get("workflow_key"):
            raise StepOfWorkflow(
                f"Job {job_id} is step {job['step_index']} of workflow {job['workflow_id']}; "
                "cancel the workflow instead")
        outcome, status = self.store.cancel(job_id, tenant, reason, running=terminate)
        if outcome is TransitionReply.MISSING:
            raise NotFound(f"Job with ID {job_id} not found", code="JOB_NOT_FOUND")
        return CancelResult(outcome is TransitionReply.OK, status)

    def waiting_reason(self, route: Route) -> str | None:
        """Why no online machine can run a route's jobs yet (None when one can)."""
        return unplaceable(route, self.machines.offers())

    def validate(self, tenant: str, request: Mapping[str, Any], *,
                 image_from_deps: bool = False) -> Validated:
        """The handler, its loaded parameters, the job's requirements and route;
        `image_from_deps` lets `image_url` be left out (a workflow step takes the image
        of a step it depends on)."""
        job_type = request["type"]
        if job_type not in self.registry:
            raise InvalidJob({"type": [f"Unsupported job type: {job_type}"]})
        handler = self.registry.get(job_type)
        errors = self._check_limits(request)
        if handler.prompt_required and not (request.get("prompt") or "").strip():
            errors["prompt"] = [f"Prompt is required for {job_type} jobs"]
        raw = request.get("parameters") or {}
        partial = ("image_url",) if image_from_deps and "image_url" not in raw else ()
        try:
            parameters = self.registry.schema(job_type).load(raw, partial=partial)
        except ValidationError as exc:
            errors.update(_prefixed("parameters", exc.normalized_messages()))
            parameters = {}
        if not errors:
            errors.update(self._check_input(tenant, handler, parameters))
        if not errors:
            errors.update(self._resolve_model(handler, parameters))
        if errors:
            raise InvalidJob(errors)
        try:
            requirements = self._requirements(handler, parameters).raised_by(
                request.get("requirements") or {})
        except ValueError as exc:
            raise InvalidJob({"requirements.model": [str(exc)]}) from None
        return Validated(handler, parameters, requirements, route_for(handler.type, requirements))

    def check_webhook(self, tenant: str, request: Mapping[str, Any]) -> None:
        """A webhook must lead somewhere public (or to an allowed host: tasks/webhooks/egress.py);
        its tenant's signing secret is made here if this is its first webhook."""
        url = request.get("webhook_url")
        if url is None:
            if request.get("webhook_events_filter") is not None:
                raise InvalidJob({"webhook_events_filter": ["needs a webhook_url"]})
            return
        try:
            egress.check_submitted(url, self.settings.webhook_allow_hosts)
        except egress.Forbidden as exc:
            raise InvalidJob({"webhook_url": [f"not allowed: {exc}"]}) from None
        self.webhooks.secret(tenant)

    def admit(self, tenant: str, priorities: list[int]) -> None:
        """The tenant's quotas (tasks/storage/quotas.py) for a submission of several jobs (a
        workflow's steps): a refusal raises QuotaExceeded (a 429)."""
        admission = self.admission(tenant, priorities)
        if admission is not None:
            self.quotas.check(admission)

    def admission(self, tenant: str, priorities: list[int]) -> Admission | None:
        """What a script checks to admit the submission; a priority above the tenant's
        ceiling is invalid input."""
        try:
            return self.quotas.admission(tenant, priorities)
        except PriorityTooHigh as exc:
            raise InvalidJob({"priority": [str(exc)]}) from None

    def _check_limits(self, request: Mapping[str, Any]) -> dict[str, list[str]]:
        """The bounds every job obeys, standalone or a workflow's step."""
        limits = self.registry.limits
        errors = {}
        if len(request.get("prompt") or "") > limits.max_prompt_length:
            errors["prompt"] = [f"Prompt must be at most {limits.max_prompt_length} characters"]
        if (request.get("timeout_seconds") or 0) > limits.max_job_timeout:
            errors["timeout_seconds"] = [f"must be at most {limits.max_job_timeout} seconds"]
        return errors

    def _resolve_model(self, handler: Handler,
                       parameters: dict[str, Any]) -> dict[str, list[str]]:
        """A job that runs a model runs one the fleet has for its type: the one it names,
        or (an image job) the fleet's default; with none known, the image job names none
        and a preview worker, where there is one, paints it."""
        if "model" not in self.registry.schema(handler.type).fields:
            return {}
        name = parameters.get("model")
        known = self.machines.known_models()
        if name and name not in known:  # a node that has just come online: look again
            known = self.machines.known_models(max_age=0)
        if name:
            info = known.get(name)
            if info is None or (info["types"] and handler.type not in info["types"]):
                have = sorted(n for n, i in known.items() if handler.type in i["types"])
                return {"parameters.model": [
                    f"unknown model {name} for {handler.type} jobs "
                    f"(the fleet has: {', '.join(have) or 'none'})"]}
        elif isinstance(handler, ImageJob):
            parameters["model"] = default_model(known, handler.type)
        return {}

    def _requirements(self, handler: Handler, parameters: Mapping[str, Any]) -> Requirements:
        """The handler's estimate, or with a known model, the model's own memory (a
        ControlNet's with its base's)."""
        requirements = handler.requirements(parameters)
        known = self.machines.known_models()
        model = known.get(parameters.get("model") or "")
        if not isinstance(handler, ImageJob) or not model or not model.get("vram_gb"):
            return requirements
        base = known.get(model.get("base") or "") or {}
        vram = model["vram_gb"] + (base.get("vram_gb") or 0)
        return requirements.for_model(handler.base_gpu_memory, vram)

    def _check_workflow(self, tenant: str, request: Mapping[str, Any]) -> None:
        """A job may name a workflow it belongs with, but not join its compiled DAG."""
        workflow_id = request.get("workflow_id")
        if workflow_id and not self.store.workflow_exists(workflow_id, tenant):
            raise NotFound(f"Workflow with ID {workflow_id} not found", code="WORKFLOW_NOT_FOUND")
        if request.get("depends_on"):
            raise InvalidJob({"depends_on": [
                "a workflow's dependencies are fixed when it is created: submit the steps "
                "together with POST /api/workflows"]})

    def _check_input(self, tenant: str, handler: Handler,
                     parameters: dict[str, Any]) -> dict[str, list[str]]:
        """The input image must be the tenant's, and the output must fit the limits."""
        url = parameters.get("image_url")
        if not url:
            return {}
        artifact_id = artifact_id_from_url(url) or ""
        artifact = self.artifacts.get(artifact_id, tenant)
        if artifact is None:
            return {"parameters.image_url": [f"artifact {artifact_id} was not found"]}
        parameters["image_url"] = artifact.url
        width, height = handler.input_size(parameters, (artifact.width, artifact.height))
        limit = self.settings.max_output_side
        if max(width, height) > limit:
            return {"parameters": [
                f"the output would be {width}x{height}; sides must be at most {limit} pixels"]}
        return {}


def _prefixed(prefix: str, messages: Any) -> dict[str, list[str]]:
    """Flatten marshmallow's nested messages into {'parameters.width': [...]}."""
    if isinstance(messages, list):
        return {prefix: [str(m) for m in messages]}
    flat: dict[str, list[str]] = {}
    for name, value in messages.items():
        key = prefix if name == "_schema" else f"{prefix}.{name}"
        flat.update(_prefixed(key, value))
    return flat

