"""The job store: job records in Redis and the indexes that list and count them.

A job is one hash (`keys.job`); every status change runs as one Lua script that
updates the hash and the status indexes together, so listings, stats and status
reads never disagree.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, cast

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.errors import InvalidInput
from tasks.core.events import EventType, is_event_field
from tasks.core.scripts import Scripts
from tasks.core.statuses import CANCELLABLE, JobStatus
from tasks.jobs.message import Prepared
from tasks.jobs.replies import TransitionReply
from tasks.storage.quotas import Admission, Refused
from tasks.webhooks.store import JOB_EVENTS, webhook_fields

JSON_FIELDS = ("parameters", "requirements", "result", "error", "depends_on", "when",
               "compensation_error")
INT_FIELDS = ("progress", "priority", "attempts", "lost", "retries", "retry_count", "timeout",
              "step_index", "deps_left", "completion_seq", "compensation_attempts",
              "queue_wait_ms", "gpu_index")


@dataclass(frozen=True)
class Record:
    """A Redis hash decoded: its JSON and integer fields parsed, the rest kept as strings."""

    json_fields: ClassVar[tuple[str, ...]] = ()
    int_fields: ClassVar[tuple[str, ...]] = ()
    fields: Mapping[str, Any]

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Self:
        decoded: dict[str, Any] = {k: v for k, v in raw.items() if not is_event_field(k)}
        for name in cls.json_fields:
            if name in decoded:
                decoded[name] = json.loads(decoded[name])
        for name in cls.int_fields:
            if name in decoded:
                decoded[name] = int(decoded[name])
        return cls(decoded)

    @classmethod
    def from_flat(cls, flat: list[str]) -> Self:
        return cls.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def id(self) -> str:
        return str(self.fields["id"])


@dataclass(frozen=True)
class Job(Record):
    """A job as stored; `fields` holds the decoded hash."""

    json_fields = JSON_FIELDS
    int_fields = INT_FIELDS

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.fields["status"])


@dataclass(frozen=True)
class NewJob:
    """What a validated submission stores."""

    tenant: str
    type: str
    prompt: str | None
    parameters: Mapping[str, Any]
    priority: int
    requirements: Mapping[str, Any]
    correlation_id: str
    timeout: int
    retries: int = 0
    webhook_url: str | None = None
    # The webhook filter's categories (tasks/webhooks/store.py), None for the default.
    webhook_events: tuple[str, ...] | None = None
    workflow_id: str | None = None
    status: JobStatus = JobStatus.PENDING
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Its route's fields (tasks/fleet/routes.py `route_fields`), and why no machine can run it yet.
    route: Mapping[str, str] = field(default_factory=dict)
    waiting_reason: str | None = None

    def to_fields(self, created_at: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "tenant": self.tenant, "type": self.type, "priority": self.priority,
            "parameters": json.dumps(self.parameters), "progress": 0,
            "requirements": json.dumps(self.requirements), "timeout": self.timeout,
            "correlation_id": self.correlation_id, "retries": self.retries,
            "retry_count": 0, "attempts": 0, "lost": 0,
            "created_at": created_at, "updated_at": created_at,
        }
        optional = {"prompt": self.prompt, "webhook_url": self.webhook_url,
                    "workflow_id": self.workflow_id, "waiting_reason": self.waiting_reason}
        fields.update({k: v for k, v in optional.items() if v is not None})
        fields.update(self.route)
        fields.update(self.extra)
        return fields


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


class InvalidCursor(InvalidInput):
    """A pagination cursor that this store did not issue."""

    default_code = "INVALID_CURSOR"


class JobStore:
    """Job records: create, read, list, count and cancel."""

    def __init__(self, client: redis.Redis, retention: int) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self._retention = retention

    def create(self, job_id: str, new: NewJob, outbox_due_ms: int | None,
               pipe: redis.client.Pipeline | None = None,
               message: Prepared | None = None, admission: Admission | None = None) -> Job:
        """Store a job and its index entries; `outbox_due_ms` marks it unpublished.

        With `pipe`, the write joins that pipeline (a workflow's transaction); with
        `message`, its broker message is queued in the same step (tasks/jobs/dispatch.py);
        with `admission`, the tenant's quota is checked first (raises `Refused`).
        """
        now = now_ms()
        fields = {**new.to_fields(iso(now)),
                  **webhook_fields(new.webhook_url, new.webhook_events,
                                   keys.job_webhooks(job_id), JOB_EVENTS)}
        scopes = keys.index_scopes(new.tenant)
        indexes = [keys.index_all(s) for s in scopes]
        indexes += [keys.type_index(s, new.type) for s in scopes]
        reply = self._scripts.create(
            keys=[keys.job(job_id), keys.SEQUENCE, keys.OUTBOX,
                  message.queue_list if message else keys.job(job_id),
                  *(admission.keys if admission else [keys.job(job_id)] * 4), *indexes],
            args=[job_id, json.dumps(fields), str(new.status), now,
                  "" if outbox_due_ms is None else outbox_due_ms,
                  EventType.JOB_QUEUED if new.status == JobStatus.PENDING else "", iso(now),
                  message.payload if message else "",
                  *(admission.args if admission else [""])],
            client=pipe,
        )
        if isinstance(reply, list):
            raise Refused(str(reply[0]), list(reply[1:]))
        return Job.from_hash({**{k: str(v) for k, v in fields.items()},
                              "id": job_id, "status": str(new.status)})

    def delete(self, job_id: str) -> None:
        """Remove a job that never became visible (its publish failed), and its events."""
        job = self.get(job_id)
        if job is None:
            return
        pipe = self._redis.pipeline()
        self.remove(job, pipe)
        pipe.execute()

    def remove(self, job: Job, pipe: redis.client.Pipeline) -> None:
        """Queue the removal of a job (its events go with its hash) and its index entries
        on `pipe`; the global log's references to its events then lead nowhere."""
        pipe.delete(keys.job_webhooks(job.id),
                    keys.webhook_queue(keys.job_webhooks(job.id)))
        pipe.zrem(keys.WEBHOOK_OUTBOX, keys.job_webhooks(job.id))
        for scope in keys.index_scopes(job["tenant"]):
            pipe.zrem(keys.index_all(scope), job.id)
            pipe.zrem(keys.type_index(scope, job["type"]), job.id)
            pipe.zrem(keys.status_index(scope, job.status), job.id)
        pipe.zrem(keys.OUTBOX, job.id)
        if job.get("route"):
            pipe.zrem(keys.route_pending(job["route"]), job.id)
        pipe.delete(keys.job(job.id))

    def get(self, job_id: str, tenant: str = keys.ALL_TENANTS) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant."""
        raw = cast(dict[str, str], self._redis.hgetall(keys.job(job_id)))
        if not raw or (tenant != keys.ALL_TENANTS and raw.get("tenant") != tenant):
            return None
        return Job.from_hash(raw)

    def workflow_exists(self, workflow_id: str, tenant: str) -> bool:
        owner = self._redis.hget(keys.workflow(workflow_id), "tenant")
        return owner is not None and tenant in (keys.ALL_TENANTS, owner)

    def page(self, tenant: str, *, status: str | None = None, job_type: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        """Newest first; pass the returned cursor to continue."""
        if status:
            index = keys.status_index(tenant, status)
        elif job_type:
            index = keys.type_index(tenant, job_type)
        else:
            index = keys.index_all(tenant)
        type_filter = job_type if (status and job_type) else ""
        reply = self._scripts.page(
            keys=[index],
            args=[decode_cursor(cursor) if cursor else "+inf", limit, type_filter,
                  keys.job(""), max(limit * 20, 1000)],
        )
        next_score, *hashes = reply
        return Page([Job.from_flat(h) for h in hashes],
                    encode_cursor(next_score) if next_score else None)

    def stats(self, tenant: str, since_ms: int, job_types: Iterable[str]) -> dict[str, Any]:
        """Counts of jobs created since `since_ms`, by status and by type, in one round trip."""
        low = since_ms * 1000
        statuses = list(JobStatus)
        types = list(job_types)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcount(keys.index_all(tenant), low, "+inf")
        for status in statuses:
            pipe.zcount(keys.status_index(tenant, status), low, "+inf")
        for job_type in types:
            pipe.zcount(keys.type_index(tenant, job_type), low, "+inf")
        total, *counts = pipe.execute()
        by_status = dict(zip((str(s) for s in statuses), counts[: len(statuses)], strict=True))
        by_type = dict(zip(types, counts[len(statuses):], strict=True))
        return {"total": total, **by_status,
                "by_type": {t: n for t, n in by_type.items() if n}}

    def cancel(self, job_id: str, tenant: str, reason: str,
               running: bool = False) -> tuple[TransitionReply, str]:
        """Cancel a pending or waiting job (and with `running`, a running one, whose lease
        goes: its run stops at its next progress report and its outcome is discarded):
        ('ok'|'missing'|'conflict', status)."""
        ts = iso()
        fields = {"cancelled_at": ts, "cancel_reason": reason, "updated_at": ts,
                  "error": json.dumps({"code": "JOB_CANCELLED", "message": reason,
                                       "timestamp": ts})}
        outcome, status, _ready, _compensate = self._scripts.transition(
            keys=[keys.job(job_id), keys.OUTBOX, keys.LEASES],
            args=[",".join(CANCELLABLE | ({JobStatus.RUNNING} if running else set())),
                  JobStatus.CANCELLED, json.dumps(fields), tenant,
                  "", "", self._retention, "1", ""],
        )
        return TransitionReply(outcome), str(status)


def encode_cursor(score: str) -> str:
    return base64.urlsafe_b64encode(score.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        float(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("cursor is not one this API issued") from None
    return raw
