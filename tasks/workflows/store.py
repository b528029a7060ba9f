"""Workflow records: one hash per workflow beside the step jobs, and their indexes.

A workflow and all of its step jobs are created in one transaction, so a
workflow is never half-written. Steps are ordinary jobs (listed and read through
the job endpoints) with the workflow's bookkeeping beside them: their
dependencies, their dependents' keys and a count of unfinished dependencies,
which the Lua scripts use to settle the workflow in the same step as the job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.outbox import Outbox
from tasks.core.scripts import Scripts
from tasks.core.statuses import JobStatus, WorkflowStatus
from tasks.jobs.store import Job, JobStore, NewJob, Record, decode_cursor, encode_cursor
from tasks.webhooks.store import STEP_EVENTS, WORKFLOW_EVENTS, webhook_fields
from tasks.workflows.replies import CancelReply

INT_FIELDS = ("total_steps", "completed_steps", "failed_steps", "forced_cuts", "added_orders",
              "saga_runs", "saga_lost")
JSON_FIELDS = ("job_ids", "error", "dag", "compensation_error")


@dataclass(frozen=True)
class NewStep:
    job: NewJob
    depends_on: tuple[int, ...] = ()
    when: tuple[Mapping[str, Any], ...] = ()
    input_from_deps: bool = False


@dataclass(frozen=True)
class NewWorkflow:
    tenant: str
    name: str
    description: str | None
    correlation_id: str
    steps: Sequence[NewStep]
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None
    forced_cuts: int = 0
    added_orders: int = 0


@dataclass(frozen=True)
class Workflow(Record):
    """A workflow as stored; `fields` holds the decoded hash."""

    json_fields = JSON_FIELDS
    int_fields = INT_FIELDS

    @property
    def status(self) -> WorkflowStatus:
        return WorkflowStatus(self.fields["status"])

    @property
    def job_ids(self) -> list[str]:
        return list(self.fields["job_ids"])


@dataclass(frozen=True)
class WorkflowPage:
    workflows: list[Workflow]
    next_cursor: str | None


@dataclass(frozen=True)
class CancelOutcome:
    outcome: CancelReply
    status: str
    cancelled: int = 0
    total: int = 0
    stopped: list[str] = field(default_factory=list)
    # The workflow whose compensation to publish ('' when none is queued yet).
    compensate: str = ""


class WorkflowStore:
    def __init__(self, client: redis.Redis, jobs: JobStore, retention: int) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self._jobs = jobs
        self._retention = retention
        # Workflows stored but not yet known to be published (create.lua adds them).
        self.outbox = Outbox(client, keys.WORKFLOW_OUTBOX)

    def create(self, workflow_id: str, job_ids: Sequence[str], new: NewWorkflow,
               outbox_due_ms: int, parked: Mapping[int, str] | None = None) -> Workflow:
        """Store the workflow and its steps in one transaction, marked unpublished;
        `parked`: step index -> the message (JSON) that runs the chain segment it heads,
        for the job store to send when the step's dependencies complete."""
        now = now_ms()
        created_at = iso(now)
        pipe = self._redis.pipeline(transaction=True)
        dependents: list[list[str]] = [[] for _ in new.steps]
        for index, step in enumerate(new.steps):
            for dep in step.depends_on:
                dependents[dep].append(keys.job(job_ids[index]))
        for index, step in enumerate(new.steps):
            self._create_step(pipe, workflow_id, job_ids, index, step, dependents[index], new,
                              (parked or {}).get(index))
        fields = self._workflow_fields(workflow_id, new, job_ids, created_at)
        scopes = keys.index_scopes(new.tenant)
        self._scripts.create(
            keys=[keys.workflow(workflow_id), keys.SEQUENCE, keys.WORKFLOW_OUTBOX,
                  *[keys.workflow(workflow_id)] * 5,
                  *(keys.workflow_index_all(s) for s in scopes)],
            args=[workflow_id, json.dumps(fields), WorkflowStatus.PENDING, now, outbox_due_ms,
                  "", created_at, "", ""],
            client=pipe,
        )
        pipe.execute()
        return Workflow.from_hash({**{k: str(v) for k, v in fields.items()}, "id": workflow_id,
                                   "status": str(WorkflowStatus.PENDING)})

    def _create_step(self, pipe: redis.client.Pipeline, workflow_id: str,
                     job_ids: Sequence[str], index: int, step: NewStep,
                     dependents: list[str], new: NewWorkflow, envelope: str | None) -> None:
        extra: dict[str, Any] = {
            "workflow_key": keys.workflow(workflow_id), "step_index": index,
            "depends_on": json.dumps(list(step.depends_on)),
            "dependency_ids": "|".join(job_ids[d] for d in step.depends_on),
            "dependent_keys": "|".join(dependents), "deps_left": len(step.depends_on),
            "when": json.dumps(list(step.when)),
        }
        if step.input_from_deps:
            extra["input_from_deps"] = 1
        if envelope is not None:
            extra.update(parked=1, envelope=envelope)
        hook = webhook_fields(new.webhook_url, new.webhook_events,
                              keys.workflow_webhooks(workflow_id), STEP_EVENTS)
        if hook.get("webhook_events"):  # its steps' events the workflow's filter takes
            extra.update(hook)
        status = JobStatus.WAITING if step.depends_on else JobStatus.PENDING
        job = replace(step.job, workflow_id=workflow_id, status=status, extra=extra)
        self._jobs.create(job_ids[index], job, None, pipe)

    @staticmethod
    def _workflow_fields(workflow_id: str, new: NewWorkflow, job_ids: Sequence[str],
                         created_at: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "tenant": new.tenant, "name": new.name, "correlation_id": new.correlation_id,
            "total_steps": len(new.steps), "completed_steps": 0, "failed_steps": 0,
            "job_ids": json.dumps(list(job_ids)),
            "step_keys": "|".join(keys.job(j) for j in job_ids),
            "dag": json.dumps([list(s.depends_on) for s in new.steps]),
            "forced_cuts": new.forced_cuts, "added_orders": new.added_orders,
            "created_at": created_at, "updated_at": created_at,
        }
        optional = {"description": new.description}
        fields.update({k: v for k, v in optional.items() if v is not None})
        fields.update(webhook_fields(new.webhook_url, new.webhook_events,
                                     keys.workflow_webhooks(workflow_id), WORKFLOW_EVENTS))
        return fields

    def delete(self, workflow: Workflow, steps: Sequence[Job]) -> None:
        """Remove a workflow whose canvas could not be published, with its steps."""
        pipe = self._redis.pipeline(transaction=True)
        for job in steps:
            self._jobs.remove(job, pipe)
        for scope in keys.index_scopes(workflow["tenant"]):
            pipe.zrem(keys.workflow_index_all(scope), workflow.id)
            pipe.zrem(keys.workflow_status_index(scope, workflow.status), workflow.id)
        pipe.zrem(keys.WORKFLOW_OUTBOX, workflow.id)
        hooks = keys.workflow_webhooks(workflow.id)
        pipe.delete(keys.workflow(workflow.id), hooks,
                    keys.webhook_queue(hooks))
        pipe.zrem(keys.WEBHOOK_OUTBOX, hooks)
        pipe.execute()

    def get(self, workflow_id: str, tenant: str = keys.ALL_TENANTS) -> Workflow | None:
        """The workflow, or None when it does not exist or belongs to another tenant."""
        raw = cast(dict[str, str], self._redis.hgetall(keys.workflow(workflow_id)))
        if not raw or (tenant != keys.ALL_TENANTS and raw.get("tenant") != tenant):
            return None
        return Workflow.from_hash(raw)

    def steps(self, workflow: Workflow) -> list[Job | None]:
        """The step jobs in step order, in one round trip (None where one expired)."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in workflow.job_ids:
            pipe.hgetall(keys.job(job_id))
        return [Job.from_hash(raw) if raw else None
                for raw in cast(list[dict[str, str]], pipe.execute())]

    def page(self, tenant: str, *, status: str | None = None, limit: int = 50,
             cursor: str | None = None) -> WorkflowPage:
        """Newest first; pass the returned cursor to continue."""
        index = (keys.workflow_status_index(tenant, status) if status
                 else keys.workflow_index_all(tenant))
        upper = decode_cursor(cursor) if cursor else "+inf"
        next_score, *hashes = self._scripts.page(
            keys=[index], args=[upper, limit, "", keys.workflow(""), max(limit * 20, 1000)])
        return WorkflowPage(
            [Workflow.from_flat(h) for h in hashes],
            encode_cursor(next_score) if next_score else None)

    def stats(self, tenant: str, since_ms: int) -> dict[str, int]:
        """Counts of workflows created since `since_ms`, by status, in one round trip."""
        low = since_ms * 1000
        statuses = list(WorkflowStatus)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcount(keys.workflow_index_all(tenant), low, "+inf")
        for status in statuses:
            pipe.zcount(keys.workflow_status_index(tenant, status), low, "+inf")
        total, *counts = pipe.execute()
        return {"total": total, **dict(zip((str(s) for s in statuses), counts, strict=True))}

    def cancel(self, workflow_id: str, tenant: str, reason: str, *, terminate: bool,
               compensate: bool, saga_due_ms: int) -> CancelOutcome:
        outcome, status, cancelled, total, stopped, publish = self._scripts.cancel_workflow(
            keys=[keys.workflow(workflow_id), keys.LEASES],
            args=[tenant, iso(), self._retention, reason, "1" if terminate else "0",
                  "1" if compensate else "0", saga_due_ms])
        return CancelOutcome(CancelReply(outcome), str(status), int(cancelled), int(total),
                             [str(s) for s in stopped], str(publish))

