"""Workflow creation, publication and cancellation: validation that needs the registry.

A workflow is either stored and its canvas published, or not stored at all: the
steps and the workflow are written in one transaction, the canvas is applied,
and if the broker refuses it the records are removed before the caller hears of
it. A crash in between is covered by the workflow outbox: the reaper applies
the canvas again (steps that already ran stand down when delivered twice).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from tasks.core.errors import Conflict, NotFound, ValidationFailed
from tasks.core.statuses import WORKFLOW_ACTIVE
from tasks.fleet.routes import route_fields
from tasks.jobs.dispatch import Dispatcher, StepCall
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.service import BrokerUnavailable, InvalidJob, JobService
from tasks.jobs.store import NewJob
from tasks.webhooks.store import categories_of
from tasks.workflows.compiler import Node, Segmented, plan, to_segmented_canvas
from tasks.workflows.replies import CancelReply
from tasks.workflows.saga import SagaStore
from tasks.workflows.store import NewStep, NewWorkflow, Workflow, WorkflowStore

log = logging.getLogger(__name__)


class InvalidWorkflow(ValidationFailed):
    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__(errors, code="WORKFLOW_CREATION_FAILED", what="Workflow")


class NotCancellable(Conflict):
    default_code = "WORKFLOW_NOT_CANCELLABLE"

    def __init__(self, status: str) -> None:
        super().__init__(f"Cannot cancel workflow in status: {status}")
        self.workflow_status = status


class NotCompensable(Conflict):
    """Only a workflow that ended without success (cancelled, compensation_failed) and
    left work behind can be compensated on request."""

    default_code = "WORKFLOW_NOT_COMPENSABLE"

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.workflow_status = status


@dataclass(frozen=True)
class CancelSummary:
    status: str
    cancelled: int
    total: int
    stopped: list[str]


@dataclass
class WorkflowService:
    store: WorkflowStore
    jobs: JobService
    dispatcher: Dispatcher
    lifecycle: Lifecycle
    saga: SagaStore
    celery: Celery
    max_steps: int

    def create(self, tenant: str, request: Mapping[str, Any],
               correlation_id: str) -> Workflow:
        """Validate every step, store the workflow, publish its canvas."""
        steps = self._validate(tenant, request, correlation_id)
        try:
            self.jobs.check_webhook(tenant, request)
            self.jobs.admit(tenant, [s.job.priority for s in steps])
        except InvalidJob as exc:
            raise InvalidWorkflow(exc.errors) from None
        layout = plan([s.depends_on for s in steps])
        new = NewWorkflow(
            tenant=tenant, name=request["name"].strip(), description=request.get("description"),
            correlation_id=correlation_id, steps=steps, webhook_url=request.get("webhook_url"),
            webhook_events=categories_of(request),
            forced_cuts=layout.forced_cuts, added_orders=layout.added_orders)
        workflow_id = str(uuid.uuid4())
        job_ids = [str(uuid.uuid4()) for _ in steps]
        signatures = [StepCall(job_id, step.job.priority, step.job.timeout,
                               step.job.route["route"])
                      for step, job_id in zip(steps, job_ids, strict=True)]
        canvas = self.canvas(layout.tree, signatures, [s.depends_on for s in steps])
        workflow = self.store.create(workflow_id, job_ids, new, self.lifecycle.outbox_due(),
                                     {i: json.dumps(sig) for i, sig in canvas.parked.items()})
        try:
            self._apply(workflow.id, canvas, signatures)
        except Exception as exc:
            self.store.delete(workflow, [j for j in self.store.steps(workflow) if j])
            raise BrokerUnavailable("workflow") from exc
        log.info("workflow %s created: %d steps, %d forced cuts", workflow_id, len(steps),
                 layout.forced_cuts)
        return workflow

    def republish(self, workflow_id: str) -> bool:
        """Apply a stored workflow's canvas again (the outbox: its first publish was lost)."""
        workflow = self.store.get(workflow_id)
        if workflow is None or workflow.status not in WORKFLOW_ACTIVE:
            self.store.outbox.published(workflow_id)
            return False
        steps = self.store.steps(workflow)
        if any(job is None for job in steps):
            self.store.outbox.published(workflow_id)
            return False
        signatures = [StepCall(j.id, j["priority"], j["timeout"], j.get("route", ""))
                      for j in steps if j]
        # The segments after the first were parked on their steps when it was created.
        canvas = self.canvas(plan(workflow["dag"]).tree, signatures, workflow["dag"])
        try:
            self._apply(workflow_id, canvas, signatures)
        except Exception:
            log.warning("republishing workflow %s failed; the outbox keeps it", workflow_id,
                        exc_info=True)
            self.store.outbox.delay(workflow_id, self.lifecycle.outbox_due())
            return False
        return True

    def cancel(self, workflow_id: str, tenant: str, reason: str, *, terminate: bool = False,
               compensate: bool = False) -> CancelSummary:
        """Stop the workflow: no step that has not started will start. With `compensate`,
        what it completed is undone (running steps are asked to stop, not killed)."""
        result = self.store.cancel(workflow_id, tenant, reason, terminate=terminate,
                                   compensate=compensate, saga_due_ms=self.saga.outbox_due())
        if result.outcome is CancelReply.MISSING:
            raise NotFound(f"Workflow with ID {workflow_id} not found", code="WORKFLOW_NOT_FOUND")
        if result.outcome is CancelReply.CONFLICT:
            raise NotCancellable(result.status)
        if result.compensate:
            self.dispatcher.compensate(result.compensate)
        return CancelSummary(result.status, result.cancelled, result.total, result.stopped)

    def compensate(self, workflow_id: str, tenant: str) -> str:
        """An operator's retry of a failed compensation, or an undo of a cancelled
        workflow's completed steps; returns the workflow's status (`compensating`)."""
        restart = self.saga.restart(workflow_id, tenant)
        if restart.outcome is CancelReply.MISSING:
            raise NotFound(f"Workflow with ID {workflow_id} not found", code="WORKFLOW_NOT_FOUND")
        if restart.outcome is CancelReply.NOTHING:
            raise NotCompensable(restart.status, "The workflow has no completed step to undo")
        if restart.outcome is CancelReply.CONFLICT:
            raise NotCompensable(restart.status, (
                f"Cannot compensate a workflow in status: {restart.status} (only cancelled "
                "workflows and failed compensations)"))
        if restart.publish:
            self.dispatcher.compensate(restart.publish)
        return restart.status

    def canvas(self, tree: Node, steps: Sequence[StepCall],
               depends_on: Sequence[Sequence[int]]) -> Segmented:
        """The Celery canvas for a plan, each step on its route's queue, its long chains
        cut into segments (tasks/workflows/compiler.py)."""
        return to_segmented_canvas(tree, depends_on, lambda i: self.dispatcher.step(steps[i]),
                                   self.dispatcher.barrier)

    def _apply(self, workflow_id: str, canvas: Segmented, steps: Sequence[StepCall]) -> None:
        canvas.head.apply_async()
        self.dispatcher.refresh.announce(step.queue for step in steps)
        self.store.outbox.published(workflow_id)

    def _validate(self, tenant: str, request: Mapping[str, Any],
                  correlation_id: str) -> list[NewStep]:
        raw_steps = request["steps"]
        if len(raw_steps) > self.max_steps:
            raise InvalidWorkflow({"steps": [
                f"Workflow cannot have more than {self.max_steps} steps"]})
        errors: dict[str, list[str]] = {}
        steps: list[NewStep] = []
        for index, raw in enumerate(raw_steps):
            try:
                steps.append(self._step(tenant, request, raw, correlation_id))
            except InvalidJob as exc:
                for name, messages in exc.errors.items():
                    errors[f"Step {index}: {name}"] = messages
        if errors:
            raise InvalidWorkflow(errors)
        return steps

    def _step(self, tenant: str, request: Mapping[str, Any], raw: Mapping[str, Any],
              correlation_id: str) -> NewStep:
        depends_on = tuple(raw.get("depends_on") or ())
        valid = self.jobs.validate(tenant, raw, image_from_deps=bool(depends_on))
        settings = self.jobs.settings
        priority = raw.get("priority", request["priority"])
        new_job = NewJob(
            tenant=tenant, type=valid.handler.type, prompt=raw.get("prompt"),
            parameters=valid.parameters, priority=priority,
            requirements=valid.requirements.as_dict(), correlation_id=correlation_id,
            retries=raw["retries"], timeout=raw.get("timeout_seconds") or settings.job_timeout,
            route=route_fields(valid.route, settings.queue),
            # A step that waits for others is explained once it is pending (the sweep).
            waiting_reason=None if depends_on else self.jobs.waiting_reason(valid.route))
        return NewStep(new_job, depends_on, tuple(raw.get("when") or ()),
                       input_from_deps="image_url" not in valid.parameters and bool(depends_on)
                       and "image_url" in self.jobs.registry.schema(valid.handler.type).fields)
