"""Publishing jobs to the broker, and the priority mapping the brokers disagree on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from celery import Celery
from celery.canvas import Signature

from tasks.lifecycle import Lifecycle
from tasks.store import Job

log = logging.getLogger(__name__)

RUN_JOB = "chordline.run_job"
RUN_STEP = "chordline.run_step"
JOIN = "chordline.join"
COMPENSATE = "chordline.compensate"
# The worker control command that makes workers look at the routes again (workers/routing.py).
REFRESH_ROUTES = "chordline_refresh_routes"
# Undoing a failed workflow (refunds, deletions) goes ahead of new work.
COMPENSATION_PRIORITY = 100
PRIORITY_LEVELS = 10
# Seconds between the soft time limit (the handler is interrupted and the job
# fails cleanly) and the hard one (the process is killed).
HARD_LIMIT_GRACE = 30


def broker_priority(priority: int, *, broker_is_redis: bool) -> int:
    """Map our 0-100 (higher is more urgent) onto Celery's 0-9.

    Redis serves priority 0 first; RabbitMQ serves the highest number first.
    """
    level = round(priority * (PRIORITY_LEVELS - 1) / 100)
    return (PRIORITY_LEVELS - 1 - level) if broker_is_redis else level


@dataclass(frozen=True)
class StepCall:
    """What the message that runs one workflow step needs."""

    job_id: str
    priority: int
    timeout: int
    queue: str


@dataclass
class Dispatcher:
    """Sends a stored job to the workers as a `chordline.run_job` message on its route's
    queue (tasks/fleet.py); joins and compensations go to the base queue."""

    celery: Celery
    lifecycle: Lifecycle
    queue: str
    broker_is_redis: bool
    # Route queues this process has told the workers about.
    _announced: set[str] = field(default_factory=set)

    def publish(self, job: Job, countdown: float | None = None) -> None:
        """Publish the job's message; raises if the broker cannot take it.

        A workflow step that has run before is sent as the message it came in,
        canvas context included, so the workflow goes on after it.
        """
        if job.get("envelope"):
            self.celery.signature(json.loads(job["envelope"])).apply_async(countdown=countdown)
            self.lifecycle.published(job.id)
            return
        queue = job.get("route") or self.queue
        self.celery.send_task(
            RUN_JOB,
            kwargs={"job_id": job.id},
            task_id=job.id,
            queue=queue,
            priority=broker_priority(job["priority"], broker_is_redis=self.broker_is_redis),
            headers={"x_correlation_id": job.get("correlation_id", "")},
            countdown=countdown,
            soft_time_limit=job["timeout"],
            time_limit=job["timeout"] + HARD_LIMIT_GRACE,
        )
        self.lifecycle.published(job.id)
        self.announce([queue])

    def announce(self, queues: Iterable[str]) -> None:
        """Ask the workers to look at the routes again when a queue is new to this process,
        so that a new route's first job is pulled at once rather than at their next look."""
        new = set(queues) - self._announced - {self.queue}
        if new and self.refresh_routes():
            self._announced |= new

    def refresh_routes(self, hostnames: list[str] | None = None) -> bool:
        """Ask workers (all, or these) to look at the routes again now; they also do
        by themselves every CHORDLINE_ROUTING_INTERVAL, so a lost request costs only time."""
        try:
            self.celery.control.broadcast(REFRESH_ROUTES, destination=hostnames)
        except Exception:
            log.warning("could not ask the workers to refresh their routes", exc_info=True)
            return False
        return True

    def step(self, call: StepCall) -> Signature:
        """The signature that runs one workflow step (its task id is the job id)."""
        return self.celery.signature(
            RUN_STEP, kwargs={"job_id": call.job_id}, immutable=True,
            options={"task_id": call.job_id, "queue": call.queue or self.queue,
                     "ignore_result": True, "soft_time_limit": call.timeout,
                     "time_limit": call.timeout + HARD_LIMIT_GRACE,
                     "priority": broker_priority(call.priority,
                                                 broker_is_redis=self.broker_is_redis)})

    def barrier(self) -> Signature:
        """A no-op that joins one group of steps before the next group starts."""
        return self.celery.signature(JOIN, immutable=True,
                                     options={"queue": self.queue, "ignore_result": True})

    def compensate(self, workflow_id: str, countdown: float | None = None) -> bool:
        """Publish a workflow's compensation run. The saga outbox covers a publish that
        fails, and the run's claim (not the message) says whether it goes ahead."""
        try:
            self.celery.send_task(
                COMPENSATE, kwargs={"workflow_id": workflow_id}, queue=self.queue,
                priority=broker_priority(COMPENSATION_PRIORITY,
                                         broker_is_redis=self.broker_is_redis),
                countdown=countdown)
        except Exception:
            log.warning("publishing the compensation of workflow %s failed; its outbox "
                        "keeps it", workflow_id, exc_info=True)
            return False
        return True

    def republish(self, job: Job, countdown: float | None = None) -> bool:
        """Publish a job the outbox covers; on failure the outbox retries later."""
        try:
            self.publish(job, countdown)
        except Exception:
            log.warning("republishing job %s failed; the outbox keeps it", job.id, exc_info=True)
            self.lifecycle.delay_outbox(job.id)
            return False
        return True
