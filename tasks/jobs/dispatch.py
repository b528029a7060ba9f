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
from collections.abc import Iterable
from dataclasses import dataclass, field

from celery import Celery
from celery.canvas import Signature
from kombu import serialization

from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.store import Job

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
# On Redis, kombu keeps one list per queue and priority step: `queue`, `queue:1` ... `queue:9`.
PRIORITY_STEPS = range(PRIORITY_LEVELS)
PRIORITY_SEP = ":"
# AMQP's delivery mode for a message that survives a broker restart (kombu's default).
PERSISTENT = 2
# Seconds between the soft time limit (the handler is interrupted and the job
# fails cleanly) and the hard one (the process is killed).
HARD_LIMIT_GRACE = 30


def broker_priority(priority: int, *, broker_is_redis: bool) -> int:
    """Map our 0-100 (higher is more urgent) onto Celery's 0-9.

    Redis serves priority 0 first; RabbitMQ serves the highest number first.
    """
    level = round(priority * (PRIORITY_LEVELS - 1) / 100)
    return (PRIORITY_LEVELS - 1 - level) if broker_is_redis else level


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


@dataclass(frozen=True)
class Prepared:
    """A job's broker message as kombu would push it: the list and the payload."""

    queue_list: str
    payload: str


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
            # The job store holds the outcome: no result to subscribe to for each job.
            ignore_result=True,
        )
        self.lifecycle.published(job.id)
        self.announce([queue])

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

    def announce(self, queues: Iterable[str]) -> None:
        """Ask the workers to look at the routes again when a queue is new to this process,
        so that a new route's first job is pulled at once rather than at their next look."""
        new = set(queues) - self._announced - {self.queue}
        if not new:
            return
        # Claimed before the broadcast: the concurrent first submits of a new route
        # (greenlets of one gunicorn worker) send one request between them, not one each.
        self._announced |= new
        if not self.refresh_routes():
            self._announced -= new

    def refresh_routes(self, hostnames: list[str] | None = None) -> bool:
        """Ask workers (all, or these) to look at the routes again now; they also do
        by themselves every CHORDLINE_ROUTING_INTERVAL, so a lost request costs only time."""
        try:
            # A connection of its own, never one from the pool: `broadcast` holds the
            # connection it acquires while the mailbox acquires a producer from the same
            # pool (kombu's pidbox), so concurrent broadcasts on a pooled one can all hold
            # one connection and wait for a second that never comes: the API hung so.
            with self.celery.connection_for_write() as connection:
                self.celery.control.broadcast(REFRESH_ROUTES, destination=hostnames,
                                              connection=connection)
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
