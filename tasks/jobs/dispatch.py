"""Publishing jobs to the broker, and the priority mapping the brokers disagree on.

Where the broker is the job store's own Redis, a new job's message is not published
on its own: it is built as kombu would push it (`Dispatcher.prepare`), and the
script that stores the job pushes it in the same step (tasks/jobs/lua/create.lua). A job
is then stored and queued at once or not at all, in one round trip, with no outbox
entry to add and clear.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass, field

from celery import Celery
from celery.canvas import Signature
from kombu import serialization

from tasks.fleet.refresh import RouteRefresh
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.message import (
    COMPENSATE,
    COMPENSATION_PRIORITY,
    HARD_LIMIT_GRACE,
    JOIN,
    PERSISTENT,
    RUN_JOB,
    RUN_STEP,
    Prepared,
    broker_lists,
    broker_priority,
)
from tasks.jobs.store import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCall:
    """What the message that runs one job needs."""

    job_id: str
    queue: str
    priority: int
    timeout: int
    correlation_id: str = ""


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
    queue (tasks/fleet/offers.py); joins and compensations go to the base queue."""

    celery: Celery
    lifecycle: Lifecycle
    queue: str
    broker_is_redis: bool
    # The broker is the job store's Redis (same server and database): see `prepare`.
    broker_is_store: bool = False
    # Asks the workers to look at the routes again when a route is new to this process.
    refresh: RouteRefresh = field(init=False)

    def __post_init__(self) -> None:
        self.refresh = RouteRefresh(self.celery, self.queue)

    def publish(self, job: Job, countdown: float | None = None) -> None:
        """Publish the job's message; raises if the broker cannot take it.

        A workflow step that has run before is sent as the message it came in,
        canvas context included, so the workflow goes on after it.
        """
        if job.get("envelope"):
            self.celery.signature(json.loads(job["envelope"])).apply_async(countdown=countdown)
            self.lifecycle.outbox.published(job.id)
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
            # The job store holds the outcome: no result to subscribe to for each job.
            ignore_result=True,
        )
        self.lifecycle.outbox.published(job.id)
        self.refresh.announce([queue])

    def prepare(self, call: JobCall) -> Prepared | None:
        """A new job's message, for the job store to push as it stores the job; None
        where the broker is elsewhere (then `publish` after storing, under the outbox).

        Celery's own `as_task_v2` makes the task message, and it is wrapped as kombu's
        Redis transport wraps a publish to the anonymous exchange, the queue's name as
        routing key, which is what `send_task` does for a direct queue; send_task's
        routing, producer and retry machinery (a fifth of a submit's CPU) is skipped.
        tests/tasks/jobs/test_dispatch.py holds this to what kombu itself would push.
        """
        if not self.broker_is_store:
            return None
        kwargs = {"job_id": call.job_id}
        headers, properties, body, _ = self.celery.amqp.as_task_v2(
            call.job_id, RUN_JOB, (), kwargs, time_limit=call.timeout + HARD_LIMIT_GRACE,
            soft_time_limit=call.timeout, ignore_result=True, reply_to=self.celery.thread_oid,
            argsrepr="()", kwargsrepr=repr(kwargs))
        headers["x_correlation_id"] = call.correlation_id
        priority = broker_priority(call.priority, broker_is_redis=True)
        content_type, content_encoding, data = serialization.dumps(body, serializer="json")
        raw = data if isinstance(data, bytes) else data.encode(content_encoding)
        properties.update(
            delivery_mode=PERSISTENT, priority=priority, body_encoding="base64",
            delivery_info={"exchange": "", "routing_key": call.queue},
            delivery_tag=str(uuid.uuid4()))
        message = {"body": base64.b64encode(raw).decode(), "content-encoding": content_encoding,
                   "content-type": content_type, "headers": headers, "properties": properties}
        return Prepared(broker_lists(call.queue)[priority], json.dumps(message))

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
            self.lifecycle.outbox.delay(job.id, self.lifecycle.outbox_due())
            return False
        return True
