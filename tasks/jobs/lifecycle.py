"""Worker-side job transitions: claim, heartbeat, finish, retry and recovery.

The lease is what makes delivery safe on Redis: a claim takes a lease token, the
executing process renews it, and every later write must present the token. A
duplicate delivery (visibility timeout, a requeue after a lost worker, the
outbox) finds the lease live and is dropped; a run whose lease was taken over
can no longer write its outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.outbox import Outbox
from tasks.core.scripts import Scripts
from tasks.core.settings import Settings
from tasks.core.statuses import JobStatus
from tasks.jobs.replies import ClaimOutcome, ReapReply, TransitionReply
from tasks.jobs.store import Job


@dataclass(frozen=True)
class JobClaim:
    """The outcome of a claim: `claimed` (with the job), or why not."""

    outcome: ClaimOutcome
    status: str
    job: Job | None = None


@dataclass(frozen=True)
class Transition:
    """What a transition did: 'ok', or why not; the status it left; the parked steps
    it made ready and the workflow whose compensation it queued, for the caller to publish."""

    outcome: TransitionReply
    status: str = ""
    ready: tuple[str, ...] = ()
    compensate: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is TransitionReply.OK


class Lease(IntEnum):
    """What a heartbeat found (the values heartbeat.lua returns)."""

    LOST = 0
    HELD = 1
    # Held, and the step's workflow is compensating: it asks the step to stop.
    STOP = 2


@dataclass(frozen=True)
class LeasePolicy:
    """How long work may go unrenewed, and a publish unconfirmed; shared by jobs and
    compensation runs."""

    lease_seconds: float
    max_deliveries: int
    outbox_grace: float
    retention: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LeasePolicy:
        """The lease namespace of the settings (CHORDLINE_LEASE_SECONDS and its kin)."""
        return cls(settings.lease_seconds, settings.max_deliveries, settings.outbox_grace,
                   settings.job_retention)

    def lease_deadline(self) -> int:
        return now_ms() + int(self.lease_seconds * 1000)

    def outbox_due(self, delay_s: float = 0.0) -> int:
        return now_ms() + int((delay_s + self.outbox_grace) * 1000)


class Lifecycle:
    """The transitions a worker makes on the jobs it runs."""

    def __init__(self, client: redis.Redis, policy: LeasePolicy) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self.policy = policy
        # Jobs stored but not yet known to be published (the scripts add them).
        self.outbox = Outbox(client, keys.OUTBOX)
        self._leases = Outbox(client, keys.LEASES)

    def lease_deadline(self) -> int:
        return self.policy.lease_deadline()

    def outbox_due(self, delay_s: float = 0.0) -> int:
        return self.policy.outbox_due(delay_s)

    def claim(self, job_id: str, token: str, worker_id: str, machine_id: str,
              hard_deadline_ms: int, envelope: str = "",
              placement: Mapping[str, Any] | None = None) -> JobClaim:
        """Take the job for this run, or say why it must not run (`draining`: this
        worker's machine takes no new jobs, and the job goes back to its queue).

        `envelope` is a workflow step's message with its canvas context, kept
        while the step runs so that a recovery can send the same message again;
        `placement` is where it runs (the GPU), stored on the job.
        """
        outcome, status, flat = self._scripts.claim(
            keys=[keys.job(job_id), keys.OUTBOX, keys.LEASES, keys.worker_jobs(worker_id),
                  keys.machine(machine_id)],
            args=[token, now_ms(), self.lease_deadline(), worker_id, machine_id, iso(),
                  self.policy.max_deliveries, hard_deadline_ms, self.policy.retention,
                  envelope, json.dumps(placement or {}), self.outbox_due()],
        )
        return JobClaim(ClaimOutcome(outcome), status, Job.from_flat(flat) if flat else None)

    def heartbeat(self, job_id: str, token: str, *, renew: bool = True,
                  progress: int | None = None) -> Lease:
        """Renew the lease and/or record progress; LOST once the lease is lost."""
        return Lease(self._scripts.heartbeat(
            keys=[keys.job(job_id), keys.LEASES],
            args=[token, self.lease_deadline() if renew else "",
                  "" if progress is None else progress, iso()],
        ))

    def complete(self, job_id: str, token: str, result: dict[str, Any]) -> Transition:
        return self._finish(job_id, token, JobStatus.COMPLETED,
                            {"result": json.dumps(result), "progress": 100})

    def fail(self, job_id: str, token: str, code: str, message: str) -> Transition:
        error = {"code": code, "message": message, "timestamp": iso()}
        return self._finish(job_id, token, JobStatus.FAILED, {"error": json.dumps(error)})

    def skip(self, job_id: str, token: str, reason: str) -> Transition:
        """A step whose condition is false: done without running, dependents go on."""
        return self._finish(job_id, token, JobStatus.SKIPPED, {
            "result": json.dumps({"skipped": True, "reason": reason}), "progress": 100})

    def stop(self, job_id: str, token: str, percent: int) -> Transition:
        """A step stopped because its workflow is compensating: it is cancelled."""
        error = {"code": "STEP_STOPPED", "timestamp": iso(),
                 "message": f"Stopped at {percent}%: the workflow is compensating"}
        return self._finish(job_id, token, JobStatus.CANCELLED, {"error": json.dumps(error)})

    def retry(self, job_id: str, token: str, code: str, message: str,
              retry_count: int, countdown: float) -> Transition:
        """Mark the job pending again; the outbox republishes it if our publish is lost.

        A step whose workflow stopped starting steps is cancelled instead (the
        outcome's status says which)."""
        ts = iso()
        fields = {"retry_count": retry_count, "updated_at": ts, "progress": 0,
                  "last_error": json.dumps({"code": code, "message": message, "timestamp": ts})}
        return self._transition(job_id, (JobStatus.RUNNING,), JobStatus.PENDING, fields,
                                token=token, outbox_due=self.outbox_due(countdown))

    def abandon(self, job_id: str, code: str, message: str, *, cancelled: bool,
                running: bool = False) -> Transition:
        """End a job whose message Celery dropped (revoked, unknown, rejected), which
        would otherwise stay pending for ever: the outbox let go of it once published.

        Only a job that has not started is ended, unless `running` says that its run
        was killed too. A revoked plain job is cancelled; a workflow step fails
        instead, so that its workflow ends rather than waits.
        """
        step = bool(self._redis.hexists(keys.job(job_id), "workflow_key"))
        status = JobStatus.CANCELLED if cancelled and not step else JobStatus.FAILED
        ts = iso()
        fields = {"updated_at": ts,
                  "error": json.dumps({"code": code, "message": message, "timestamp": ts})}
        current = [JobStatus.WAITING, JobStatus.PENDING] + ([JobStatus.RUNNING] if running else [])
        return self._transition(job_id, current, status, fields, token="", terminal=True)

    def reap(self, job_id: str) -> ReapReply:
        """Recover one running job whose lease expired (see tasks/jobs/lua/reap.lua)."""
        return ReapReply(self._scripts.reap(
            keys=[keys.job(job_id), keys.OUTBOX, keys.LEASES],
            args=[job_id, now_ms(), self.policy.max_deliveries, self.outbox_due(),
                  iso(), self.policy.retention],
        ))

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Running jobs whose lease deadline has passed (the lease set is scored as an
        outbox is)."""
        return self._leases.due(limit)


    def _finish(self, job_id: str, token: str, status: JobStatus,
                fields: dict[str, Any]) -> Transition:
        fields["updated_at"] = iso()
        return self._transition(job_id, (JobStatus.RUNNING,), status, fields, token=token,
                                terminal=True)

    def _transition(self, job_id: str, current: Iterable[JobStatus], new: JobStatus,
                    fields: dict[str, Any], *, token: str, outbox_due: int | None = None,
                    terminal: bool = False) -> Transition:
        outcome, status, ready, compensate = self._scripts.transition(
            keys=[keys.job(job_id), keys.OUTBOX, keys.LEASES],
            args=[",".join(current), new, json.dumps(fields), keys.ALL_TENANTS, token,
                  "" if outbox_due is None else outbox_due, self.policy.retention,
                  "1" if terminal else "0", self.outbox_due()],
        )
        return Transition(TransitionReply(outcome), str(status), tuple(ready), str(compensate))
