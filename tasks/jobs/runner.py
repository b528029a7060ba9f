"""The `chordline.run_job` task: claim the job, run its handler, record the outcome.

The task records its own outcome in the job store (never through Celery
errbacks), so a duplicate delivery, a lost worker or a chord edge case cannot
leave the job's state wrong.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from tasks.core.clock import now_ms
from tasks.core.context import app_services
from tasks.core.errors import JobError, LeaseLost, StepStopped
from tasks.core.settings import Settings
from tasks.core.statuses import JobStatus
from tasks.fleet.machines import MachineStore
from tasks.fleet.model_cache import ModelCache
from tasks.fleet.profile import NodeProfile
from tasks.fleet.routes import RouteStore
from tasks.handlers.base import JobContext
from tasks.handlers.registry import HandlerRegistry
from tasks.jobs.dispatch import Dispatcher
from tasks.jobs.lease import LeaseKeeper, ProgressReporter
from tasks.jobs.lifecycle import Lifecycle, Transition
from tasks.jobs.message import HARD_LIMIT_GRACE, RUN_JOB
from tasks.jobs.replies import ClaimOutcome
from tasks.jobs.store import Job, JobStore
from tasks.storage.artifacts import ArtifactStore

log = get_task_logger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What a claimed job runs with, or why it is skipped (a workflow step's `when`)."""

    parameters: Mapping[str, Any]
    skip_reason: str | None = None


class InputPreparer(Protocol):
    """Reads what a job runs with before it runs (tasks/workflows/inputs.py: a step's
    conditions and the image its dependencies made)."""

    def prepare(self, job: Job) -> RunPlan: ...


class RunnerServices(Protocol):
    """What a run uses of its process's services (tasks/services.py builds them; this
    room below it names only what it needs, so nothing here imports the builder)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def node(self) -> NodeProfile | None: ...
    @property
    def models(self) -> ModelCache | None: ...
    @property
    def lifecycle(self) -> Lifecycle: ...
    @property
    def store(self) -> JobStore: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def step_inputs(self) -> InputPreparer: ...
    @property
    def registry(self) -> HandlerRegistry: ...
    @property
    def artifacts(self) -> ArtifactStore: ...
    @property
    def routes(self) -> RouteStore: ...
    @property
    def machines(self) -> MachineStore: ...
correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")
MAX_BACKOFF = 300


class CorrelationFilter(logging.Filter):
    """Stamp log records with the correlation id of the job being run."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True


def backoff(retry_count: int, base: float = 1.0) -> float:
    """Exponential backoff for the n-th retry (0-based), capped at five minutes."""
    return float(min(base * 2**retry_count, MAX_BACKOFF))


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def run_job(self: Task, job_id: str) -> str:
    """Run one job; the return value says what happened (for logs and Flower)."""
    return run_in_task(self, job_id)


def run_in_task(task: Task, job_id: str, envelope: str = "") -> str:
    """Run a job from inside a Celery task, under the task's hard time limit."""
    hard_limit = (task.request.timelimit or (None, None))[0] or HARD_LIMIT_GRACE
    runner = JobRunner(app_services(), task.request.hostname or "worker")
    try:
        return runner.run(job_id, now_ms() + int(hard_limit * 1000), envelope)
    except redis.ConnectionError as exc:
        # Nothing was claimed: hand the message back rather than ack it away.
        raise Reject(str(exc), requeue=True) from exc


class JobRunner:
    def __init__(self, services: RunnerServices, worker_id: str) -> None:
        self._s = services
        self._worker_id = worker_id

    def run(self, job_id: str, hard_deadline_ms: int, envelope: str = "") -> str:
        """Claim and run the job; returns what happened (`completed`, `busy`, ...)."""
        token = uuid.uuid4().hex
        sent = time.monotonic()
        gpu = self._s.node.gpu if self._s.node else None
        claim = self._s.lifecycle.claim(
            job_id, token, self._worker_id, self._s.settings.machine_id, hard_deadline_ms,
            envelope, {"gpu_index": gpu.index, "gpu_name": gpu.name} if gpu else None)
        if claim.outcome is ClaimOutcome.DRAINING:
            return self._hand_back(job_id)
        if claim.job is None:
            log.info("job %s not run: %s (%s)", job_id, claim.outcome, claim.status)
            return claim.outcome
        correlation_id.set(claim.job.get("correlation_id") or "-")
        with LeaseKeeper.for_job(self._s.lifecycle, job_id, token, sent) as keeper:
            return self._execute(claim.job, token, keeper)

    def _hand_back(self, job_id: str) -> str:
        """This machine is draining: send the job back to its queue for another machine
        (the outbox sends it if this publish is lost)."""
        job = self._s.store.get(job_id)
        if job is not None:
            self._s.dispatcher.republish(job)
        log.info("job %s handed back: this machine is draining", job_id)
        return "handed_back"

    def _execute(self, job: Job, token: str, keeper: LeaseKeeper) -> str:
        lifecycle = self._s.lifecycle
        started, loading = time.monotonic(), self._loading()
        saved: list[dict[str, Any]] = []
        try:
            plan = self._s.step_inputs.prepare(job)
            if plan.skip_reason is not None:
                return self._settled(lifecycle.skip(job.id, token, plan.skip_reason), "skipped")
            handler = self._s.registry.get(job["type"])
            report = ProgressReporter(job.id, keeper, handler.interruptible(plan.parameters),
                                      min_interval=0 if handler.report_every_step else 0.25)
            result = handler.run(self._context(job, plan.parameters, report, saved))
        except LeaseLost:
            log.warning("job %s lost its lease (taken over, cancelled, or not renewed in time "
                        "while Redis was out of reach); outcome discarded", job.id)
            self._discard(job.id, saved)
            return "lease_lost"
        except StepStopped as exc:
            # Its workflow is compensating: what the run made so far is undone here.
            self._s.artifacts.delete_job_artifacts(job.id)
            return self._settled(lifecycle.stop(job.id, token, exc.percent), "stopped")
        except SoftTimeLimitExceeded:
            return self._settled(lifecycle.fail(
                job.id, token, "JOB_TIMEOUT", f"Job exceeded its time limit of {job['timeout']} s"),
                "failed")
        except JobError as exc:
            if exc.retryable:
                return self._retry_or_fail(job, token, exc.code, exc.message)
            return self._settled(lifecycle.fail(job.id, token, exc.code, exc.message), "failed")
        except Exception as exc:
            log.exception("job %s failed", job.id)
            return self._retry_or_fail(job, token, "HANDLER_ERROR", str(exc) or type(exc).__name__)
        outcome = self._settled(lifecycle.complete(job.id, token, result), "completed")
        if job["requirements"].get("model"):  # placement weighs loads against these runs
            work = time.monotonic() - started - (self._loading() - loading)
            self._s.routes.record_run(job["route"], work)
        return outcome

    def _context(self, job: Job, parameters: Mapping[str, Any], report: ProgressReporter,
                 saved: list[dict[str, Any]]) -> JobContext:
        """The job as its handler sees it; on a GPU worker, with the GPU's models."""
        node = self._s.node
        gpu = node.gpu if node else None
        return JobContext(
            job_id=job.id, tenant=job["tenant"], prompt=job.get("prompt") or "",
            parameters=parameters, attempt=job["attempts"],
            correlation_id=job.get("correlation_id", ""), artifacts=self._s.artifacts,
            report=report, saved=saved, gpu=gpu, models=self._s.models if gpu else None,
            catalog=node.catalog if node else None, queue_wait_ms=job.get("queue_wait_ms"),
            fresh_process=lambda: self._s.machines.ask_fresh_process(self._worker_id,
                                                                      os.getpid()))

    def _discard(self, job_id: str, saved: list[dict[str, Any]]) -> None:
        """Delete what a run whose outcome is discarded saved (best effort: a fenced run
        may not reach Redis; the retention sweep finds what stays)."""
        if not saved:
            return
        try:
            self._s.artifacts.delete_job_artifacts(job_id, [a["id"] for a in saved])
        except redis.RedisError:
            log.warning("could not delete what job %s saved before it stopped", job_id)

    def _loading(self) -> float:
        """Seconds this process has spent loading models (none on a CPU worker)."""
        return self._s.models.load_seconds if self._s.models else 0.0

    def _settled(self, outcome: Transition, label: str) -> str:
        """Publish the parked steps the outcome released and the compensation it
        queued (each outbox covers a lost publish); say what happened."""
        for job_id in outcome.ready:
            ready = self._s.store.get(job_id)
            if ready is not None:
                self._s.dispatcher.republish(ready)
        if outcome.compensate:
            self._s.dispatcher.compensate(outcome.compensate)
        return label if outcome.ok else outcome.outcome

    def _retry_or_fail(self, job: Job, token: str, code: str, message: str) -> str:
        retry_count = job["retry_count"]
        if retry_count >= job["retries"]:
            return self._settled(self._s.lifecycle.fail(job.id, token, code, message), "failed")
        countdown = backoff(retry_count)
        outcome = self._s.lifecycle.retry(job.id, token, code, message, retry_count + 1,
                                          countdown)
        if not outcome.ok:
            return outcome.outcome
        if outcome.status != JobStatus.PENDING:  # its workflow halted meanwhile
            return self._settled(outcome, outcome.status)
        log.info("job %s retry %d in %.0f s", job.id, retry_count + 1, countdown)
        self._s.dispatcher.republish(job, countdown)
        return "retrying"
