"""Recovery that no Celery signal can trigger: lost workers and lost publishes.

A SIGKILLed worker fires no signal and, on Redis, its unacked messages return
only after the visibility timeout. Every worker runs this reaper on a timer:
the messages a dead worker held go back to their queues (tasks/fleet/reservations.py),
jobs whose lease expired are queued again (or failed, once they have lost their
worker `max_deliveries` times), jobs, workflows and compensations left in the
outboxes (or whose compensation run's lease ran out) are published again, the
event log is trimmed to its retention, and image files whose records expired
are deleted. A workflow step
goes out as the message it came in, so its workflow's canvas goes on after it.
Running it on many workers at once is safe: each step is one atomic script.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.events import EventLog
from tasks.core.statuses import JobStatus
from tasks.fleet.machines import MachineStore
from tasks.fleet.reservations import Reservations
from tasks.fleet.routes import RouteStore
from tasks.jobs.dispatch import Dispatcher
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.replies import ReapReply
from tasks.jobs.store import JobStore
from tasks.storage.artifacts import ArtifactStore
from tasks.storage.retention import IndexSweep
from tasks.workflows.service import WorkflowService

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600
# How often one worker explains why jobs wait for a machine (ms), and how long a
# route nobody uses stays known (s).
EXPLAIN_EVERY_MS = 2000
ROUTE_IDLE = 24 * 3600


@dataclass
class Reaper:
    client: redis.Redis
    store: JobStore
    lifecycle: Lifecycle
    dispatcher: Dispatcher
    workflows: WorkflowService
    retention: int
    events: EventLog
    event_retention: int
    routes: RouteStore
    machines: MachineStore
    artifacts: ArtifactStore
    artifact_sweep_interval: float
    # On a Redis broker: dead workers' unacknowledged messages go back to their queues.
    reservations: Reservations | None = None
    _sweeper: threading.Thread | None = field(default=None, init=False)

    def tick(self) -> dict[str, int]:
        """One pass; returns how many jobs it requeued, failed and republished, and how
        many messages of dead workers it gave back to their queues."""
        counts = {"requeued": 0, "failed": 0, "republished": 0, "restored": 0}
        if self.reservations is not None:
            counts["restored"] = self.reservations.restore_dead(
                self.machines.live_boots(), self.machines.liveness_cutoff())
        for job_id in self.lifecycle.expired_leases():
            outcome = self.lifecycle.reap(job_id)
            if outcome is ReapReply.REQUEUED:
                counts["requeued"] += 1
                self._publish(job_id)
            elif outcome in (ReapReply.TIMED_OUT, ReapReply.POISONED):
                counts["failed"] += 1
                log.error("job %s failed: %s", job_id, outcome)
        for job_id in self.lifecycle.outbox.due():
            counts["republished"] += self._publish(job_id)
        for workflow_id in self.workflows.store.outbox.due(20):
            log.info("publishing workflow %s again", workflow_id)
            counts["republished"] += self.workflows.republish(workflow_id)
        for workflow_id in self.workflows.saga.outbox.due(20):
            log.info("publishing the compensation of workflow %s again", workflow_id)
            self.workflows.saga.delay(workflow_id)
            counts["republished"] += self.dispatcher.compensate(workflow_id)
        self.events.trim(self.event_retention, now_ms())
        self._explain()
        self._prune()
        self._sweep_artifacts()
        return counts

    def _sweep_artifacts(self) -> None:
        """In a thread of its own (a large directory must not delay the heartbeat), and
        never against a Redis that has lost its data (no job was ever counted): every
        file would look orphaned."""
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        if not self.client.exists(keys.SEQUENCE):
            return
        self._sweeper = threading.Thread(
            target=self.artifacts.sweep, args=(self.artifact_sweep_interval,),
            name="chordline-artifact-sweep", daemon=True)
        self._sweeper.start()

    def _explain(self) -> None:
        """On one worker at a time: say why jobs wait that no online machine can run,
        and clear it where one now can."""
        if self.client.set(keys.ROUTE_SWEEP_LOCK, "1", nx=True, px=EXPLAIN_EVERY_MS):
            self.routes.explain_all(self.machines.offers(max_age=0))

    def _publish(self, job_id: str) -> int:
        job = self.store.get(job_id)
        if job is None or job.status != JobStatus.PENDING:
            self.lifecycle.outbox.published(job_id)
            return 0
        log.info("publishing job %s again", job_id)
        return int(self.dispatcher.republish(job))

    def _prune(self) -> None:
        """Hourly, on one worker: drop index entries older than the job retention."""
        if not self.client.set(keys.PRUNE_LOCK, "1", nx=True, ex=PRUNE_EVERY):
            return
        IndexSweep(self.client).run(now_ms() - self.retention * 1000)
        self.routes.forget_idle(now_ms() - ROUTE_IDLE * 1000)
