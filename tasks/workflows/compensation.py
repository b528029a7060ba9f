"""The `chordline.compensate` task: undo a workflow's completed steps, latest first.

One run at a time holds a workflow's compensation (tasks/workflows/saga.py). It undoes the
steps in `compensation_order`, recording each under its lease, so a duplicate
message stands down and a run that dies is taken over by the next one without
any step undone twice. A failed attempt is retried by publishing the task again
after a backoff, so no worker is held while it waits.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Protocol

import redis
from celery import Task, shared_task
from celery.exceptions import Reject

from tasks.core.clock import iso
from tasks.core.context import app_services
from tasks.core.errors import JobError
from tasks.core.statuses import TO_COMPENSATE
from tasks.handlers.base import CompensationContext
from tasks.handlers.registry import HandlerRegistry
from tasks.jobs.dispatch import Dispatcher
from tasks.jobs.lease import LeaseKeeper
from tasks.jobs.message import COMPENSATE
from tasks.jobs.runner import backoff
from tasks.jobs.store import Job
from tasks.storage.artifacts import ArtifactStore
from tasks.workflows.replies import AttemptReply, SagaClaim, SagaReply
from tasks.workflows.saga import Attempt, SagaStore, compensation_order
from tasks.workflows.store import WorkflowStore

log = logging.getLogger(__name__)


@shared_task(name=COMPENSATE, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def compensate(self: Task, workflow_id: str) -> str:
    """Run the workflow's compensation; the return value says what happened."""
    try:
        return Compensator(app_services()).run(workflow_id)
    except redis.ConnectionError as exc:
        # The lease (if taken) runs out and the reaper publishes the run again.
        raise Reject(str(exc), requeue=True) from exc


class CompensatorServices(Protocol):
    """What a compensation run uses of its process's services (tasks/services.py)."""

    @property
    def saga(self) -> SagaStore: ...
    @property
    def workflow_store(self) -> WorkflowStore: ...
    @property
    def registry(self) -> HandlerRegistry: ...
    @property
    def artifacts(self) -> ArtifactStore: ...
    @property
    def dispatcher(self) -> Dispatcher: ...


class Compensator:
    def __init__(self, services: CompensatorServices) -> None:
        self._s = services

    def run(self, workflow_id: str) -> str:
        """Claim the compensation and undo what is left to undo."""
        saga = self._s.saga
        token = uuid.uuid4().hex
        sent = time.monotonic()
        claim = saga.claim(workflow_id, token)
        if claim is not SagaClaim.CLAIMED:
            log.info("compensation of workflow %s not run: %s", workflow_id, claim)
            return claim
        keeper = LeaseKeeper(lambda _progress: saga.renew(workflow_id, token),
                             saga.policy.lease.lease_seconds, f"compensation of {workflow_id}",
                             sent)
        with keeper:
            return self._undo(workflow_id, token, keeper)

    def _undo(self, workflow_id: str, token: str, keeper: LeaseKeeper) -> str:
        workflow = self._s.workflow_store.get(workflow_id)
        if workflow is None:
            return "missing"
        undo = {index: job for index, job in enumerate(self._s.workflow_store.steps(workflow))
                if job is not None and job.status in TO_COMPENSATE}
        completed = {index: job.get("completion_seq", 0) for index, job in undo.items()}
        for index in compensation_order(workflow["dag"], completed):
            if keeper.lost:
                return "lease_lost"
            outcome = self._undo_step(workflow_id, undo[index], token)
            if outcome != "compensated":
                return outcome
        finished = self._s.saga.finish(workflow_id, token)
        log.info("workflow %s compensated: %s", workflow_id, finished)
        return "compensated" if finished is SagaReply.OK else finished

    def _undo_step(self, workflow_id: str, step: Job, token: str) -> str:
        saga = self._s.saga
        attempt = saga.attempt(workflow_id, step.id, token)
        if attempt.outcome in (AttemptReply.DONE, AttemptReply.SKIP):
            return "compensated"
        if attempt.outcome is not AttemptReply.OK:
            return attempt.outcome
        ctx = CompensationContext(
            job_id=step.id, tenant=step["tenant"], parameters=step["parameters"],
            result=step.get("result") or {}, attempt=attempt.number,
            correlation_id=step.get("correlation_id", ""), artifacts=self._s.artifacts)
        try:
            result = self._s.registry.get(step["type"]).compensate(ctx)
        except Exception as exc:
            log.warning("compensation of step %s of workflow %s failed (attempt %d)",
                        step["step_index"], workflow_id, attempt.number, exc_info=True)
            return self._attempt_failed(workflow_id, step, token, attempt, exc)
        if not saga.compensated(workflow_id, step.id, token, result or {}):
            return "lease_lost"  # another run took over; it records this step itself
        return "compensated"

    def _attempt_failed(self, workflow_id: str, step: Job, token: str, attempt: Attempt,
                        exc: Exception) -> str:
        """Retry after a backoff, or stop the saga once the attempts are used up (or the
        handler says retrying cannot help)."""
        code = exc.code if isinstance(exc, JobError) else "COMPENSATION_ERROR"
        error: dict[str, Any] = {"code": code, "message": str(exc) or type(exc).__name__,
                                 "attempt": attempt.number, "timestamp": iso()}
        permanent = isinstance(exc, JobError) and not exc.retryable
        if attempt.used >= self._s.saga.policy.attempts or permanent:
            self._s.saga.failed(workflow_id, step.id, token, error)
            return "compensation_failed"
        countdown = backoff(attempt.used - 1, self._s.saga.policy.backoff)
        if self._s.saga.retry_later(workflow_id, step.id, token, error, countdown):
            self._s.dispatcher.compensate(workflow_id, countdown)
        return "retrying"
