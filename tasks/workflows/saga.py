"""The saga's state in Redis: who runs a workflow's compensation, and how each step went.

A step that fails for good moves its workflow to `compensating` in the same script that
records the failure (`begin_compensation` in tasks/core/lua/prelude/4_workflows.lua),
which also queues the compensation exactly once: at once when no step is running, else
when the last running step settles. From there a compensation run holds a lease, renewed
from a thread, and records every step it undoes under it. The workflow stays in
`keys.SAGA_OUTBOX` until the lease's deadline, so if the run dies the reaper publishes
it again, and the next run goes on from the first step not yet compensated. Nothing here
runs a handler; tasks/workflows/compensation.py does.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.outbox import Outbox
from tasks.core.scripts import Scripts
from tasks.core.settings import Settings
from tasks.jobs.lifecycle import Lease, LeasePolicy
from tasks.workflows.replies import AttemptReply, CancelReply, SagaClaim, SagaReply


def compensation_order(depends_on: Sequence[Sequence[int]],
                       completed: Mapping[int, int]) -> list[int]:
    """The completed steps (index -> completion sequence) in the order to undo them.

    Reverse topological: a step is undone only after every completed step that
    depends on it. Among the steps free to go, the latest-completed goes first.
    """
    blocking = dict.fromkeys(completed, 0)
    for index in completed:
        for dep in depends_on[index]:
            if dep in completed:
                blocking[dep] += 1
    free = [(-completed[i], i) for i, count in blocking.items() if count == 0]
    heapq.heapify(free)
    order: list[int] = []
    while free:
        _, index = heapq.heappop(free)
        order.append(index)
        for dep in depends_on[index]:
            if dep in completed:
                blocking[dep] -= 1
                if blocking[dep] == 0:
                    heapq.heappush(free, (-completed[dep], dep))
    return order


@dataclass(frozen=True)
class SagaPolicy:
    lease: LeasePolicy
    # Attempts at one step's compensation before the saga stops (per operator retry),
    # and the first backoff between them (seconds, doubling).
    attempts: int
    backoff: float

    @classmethod
    def from_settings(cls, settings: Settings, lease: LeasePolicy) -> SagaPolicy:
        """The saga namespace of the settings (CHORDLINE_COMPENSATION_*)."""
        return cls(lease, settings.compensation_retries + 1, settings.compensation_backoff)


@dataclass(frozen=True)
class Attempt:
    """Whether to try a step's compensation now: `ok`, or why not (`done`, `skip`,
    `lost`, `exhausted`); its number over the step's life, and how many of the
    attempts this run allows it uses."""

    outcome: AttemptReply
    number: int
    used: int


@dataclass(frozen=True)
class Restart:
    outcome: CancelReply
    status: str
    publish: str


class SagaStore:
    """The transitions of a workflow's compensation (each one atomic script)."""

    def __init__(self, client: redis.Redis, policy: SagaPolicy) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self.policy = policy
        # Workflows whose compensation should be published (again) once due.
        self.outbox = Outbox(client, keys.SAGA_OUTBOX)

    def outbox_due(self, delay_s: float = 0.0) -> int:
        return self.policy.lease.outbox_due(delay_s)

    def claim(self, workflow_id: str, token: str) -> SagaClaim:
        """`claimed`, or why this run must stand down (`busy`, `early`, `skip`, `missing`)."""
        return SagaClaim(self._scripts.saga_claim(
            keys=[keys.workflow(workflow_id)],
            args=[token, now_ms(), self.policy.lease.lease_deadline(), iso(), workflow_id]))

    def renew(self, workflow_id: str, token: str) -> Lease:
        held = self._scripts.saga_renew(keys=[keys.workflow(workflow_id)],
                                        args=[token, self.policy.lease.lease_deadline()])
        return Lease.HELD if held else Lease.LOST

    def attempt(self, workflow_id: str, job_id: str, token: str) -> Attempt:
        outcome, number, used = self._scripts.saga_attempt(
            keys=[keys.workflow(workflow_id), keys.job(job_id)],
            args=[token, self.policy.attempts, iso(), self.policy.lease.retention])
        return Attempt(AttemptReply(outcome), int(number), int(used))

    def compensated(self, workflow_id: str, job_id: str, token: str,
                    result: Mapping[str, Any]) -> bool:
        return self._settle(workflow_id, job_id, token, "compensated", result)

    def retry_later(self, workflow_id: str, job_id: str, token: str,
                    error: Mapping[str, Any], countdown: float) -> bool:
        """Let go of the run; the compensation is published again after `countdown`."""
        return self._settle(workflow_id, job_id, token, "retry", error,
                            now_ms() + int(countdown * 1000), self.outbox_due(countdown))

    def failed(self, workflow_id: str, job_id: str, token: str,
               error: Mapping[str, Any]) -> bool:
        """The step's compensation failed for good: the workflow ends compensation_failed."""
        return self._settle(workflow_id, job_id, token, "failed", error)

    def finish(self, workflow_id: str, token: str) -> SagaReply:
        """`ok` once every completed step is compensated (the workflow ends compensated)."""
        return SagaReply(self._scripts.saga_finish(keys=[keys.workflow(workflow_id)],
                                             args=[token, iso(), self.policy.lease.retention]))

    def restart(self, workflow_id: str, tenant: str) -> Restart:
        """An operator's retry: compensate again what is not compensated yet."""
        outcome, status, publish = self._scripts.saga_restart(
            keys=[keys.workflow(workflow_id)], args=[tenant, iso(), self.outbox_due()])
        return Restart(CancelReply(outcome), str(status), str(publish))

    def delay(self, workflow_id: str) -> None:
        """Published again: look once more after the grace, unless a run's lease (or a
        retry's backoff) already says later."""
        self.outbox.delay(workflow_id, self.outbox_due(), only_later=True)

    def _settle(self, workflow_id: str, job_id: str, token: str, outcome: str,
                detail: Mapping[str, Any], not_before: int = 0, due: int = 0) -> bool:
        return self._scripts.saga_settle(
            keys=[keys.workflow(workflow_id), keys.job(job_id)],
            # default=str: what a plugin's compensation returns is shown, never a crash.
            args=[token, outcome, json.dumps(detail, default=str), iso(),
                  self.policy.lease.retention, not_before, due]) == SagaReply.OK
