"""Webhooks: which events a job or workflow sends to its `webhook_url`, and their deliveries.

A delivery is queued by the Lua step that emits its event (tasks/core/lua/prelude/2_events.lua
`queue_webhook`), so an accepted event is never without its delivery, and a
crash anywhere after loses nothing. Each subject (a job, or a workflow with its
steps) has a queue of undelivered ones, sent head first, one at a time: its
events arrive in order. The subject sits in an outbox scored by when its head is
due; a deliverer (tasks/webhooks/courier.py, in every worker) claims it under a lease and
settles each attempt: delivered, retry at a later time, or failed for good. A
deliverer that dies leaves its lease to run out, and the delivery goes again
with the same `webhook-id`: at least once, so receivers dedupe by that id.

The filter (Replicate's `webhook_events_filter`) names categories; a record
keeps the event types they stand for, ','-wrapped, for the Lua step to match.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.events import EventType as E
from tasks.core.scripts import Scripts
from tasks.webhooks import signature

DEFAULT_FILTER = ("completed",)
# What each category delivers, for a job and for a workflow; a workflow's steps
# send theirs to the workflow's webhook (its `progress` and `compensation`).
JOB_EVENTS: Mapping[str, tuple[E, ...]] = {
    "queued": (E.JOB_QUEUED, E.JOB_UNSCHEDULABLE),
    "start": (E.JOB_STARTED,),
    "progress": (E.JOB_PROGRESS,),
    "retrying": (E.JOB_RETRYING,),
    "completed": (E.JOB_COMPLETED, E.JOB_FAILED, E.JOB_CANCELLED),
}
WORKFLOW_EVENTS: Mapping[str, tuple[E, ...]] = {
    "start": (E.WORKFLOW_STARTED,),
    "completed": (E.WORKFLOW_COMPLETED, E.WORKFLOW_FAILED, E.WORKFLOW_CANCELLED,
                  E.WORKFLOW_COMPENSATED, E.WORKFLOW_COMPENSATION_FAILED),
    "compensation": (E.WORKFLOW_COMPENSATING,),
}
STEP_EVENTS: Mapping[str, tuple[E, ...]] = {
    "progress": (E.JOB_STARTED, E.JOB_COMPLETED, E.JOB_FAILED, E.JOB_CANCELLED, E.JOB_SKIPPED),
    "compensation": (E.STEP_COMPENSATED, E.STEP_COMPENSATION_FAILED),
}
CATEGORIES = ("queued", "start", "progress", "retrying", "completed", "compensation")


def event_filter(categories: Iterable[str], table: Mapping[str, tuple[E, ...]]) -> str:
    """The ','-wrapped event types a record keeps (empty when none apply)."""
    types = sorted({str(t) for c in categories for t in table.get(c, ())})
    return f",{','.join(types)}," if types else ""


def categories_of(request: Mapping[str, Any]) -> tuple[str, ...] | None:
    """A submission's `webhook_events_filter` (None: the default)."""
    chosen = request.get("webhook_events_filter")
    return tuple(chosen) if chosen is not None else None


def webhook_fields(url: str | None, categories: Iterable[str] | None, webhooks_key: str,
                   table: Mapping[str, tuple[E, ...]]) -> dict[str, str]:
    """What a job, workflow or step record keeps of its webhook."""
    if url is None:
        return {}
    chosen = tuple(categories or DEFAULT_FILTER)
    return {"webhook_url": url, "webhooks_key": webhooks_key,
            "webhook_events": event_filter(chosen, table)}


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


class Settled(StrEnum):
    SETTLED = "settled"
    # The attempt's lease ran out and the delivery was taken again (or it is over).
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True)
class Delivery:
    """One delivery a deliverer holds: its attempt number fences its settle."""

    webhooks_key: str
    id: str
    attempt: int
    url: str
    tenant: str
    payload: str
    created_ms: int

    @classmethod
    def parse(cls, webhooks_key: str, raw: str) -> Delivery:
        d = json.loads(raw)
        return cls(webhooks_key, d["id"], int(d["inflight"]), d["url"], d["tenant"],
                   d["payload"], int(d["created_ms"]))


class WebhookStore:
    """Deliveries and signing secrets in Redis (each transition one script)."""

    def __init__(self, client: redis.Redis, secret_grace: float) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self._grace_ms = int(secret_grace * 1000)

    def claim(self, lease_s: float, most: int) -> list[Delivery]:
        flat = self._scripts.webhook_claim(keys=[keys.WEBHOOK_OUTBOX],
                                           args=[now_ms(), int(lease_s * 1000), most])
        return [Delivery.parse(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def settle(self, claim: Delivery, outcome: AttemptOutcome, detail: Mapping[str, Any],
               next_ms: int = 0) -> Settled:
        return Settled(self._scripts.webhook_settle(
            keys=[claim.webhooks_key, keys.WEBHOOK_OUTBOX],
            args=[claim.id, claim.attempt, outcome, now_ms(), next_ms, json.dumps(detail),
                  iso()]))

    def deliveries(self, webhooks_key: str) -> list[dict[str, Any]]:
        """A subject's deliveries, oldest event first, as the API shows them."""
        raw = cast(dict[str, str], self._redis.hgetall(webhooks_key))
        found = sorted((json.loads(v) for v in raw.values()), key=_event_order)
        return [_shown(d) for d in found]

    def backlog(self) -> tuple[int, float]:
        """Subjects with a delivery waiting (due, held or retrying), and how late (s) the
        most overdue one is: what /metrics shows."""
        subjects = int(self._redis.zcard(keys.WEBHOOK_OUTBOX))
        first = cast(list[tuple[str, float]],
                     self._redis.zrange(keys.WEBHOOK_OUTBOX, 0, 0, withscores=True))
        late = max(0.0, (now_ms() - first[0][1]) / 1000) if first else 0.0
        return subjects, late

    def rotate_secret(self, tenant: str) -> str:
        """A new signing secret for the tenant; the old one verifies for the grace period."""
        secret = signature.new_secret()
        self._scripts.webhook_secret(keys=[keys.webhook_secret(tenant)],
                                     args=[secret, now_ms() + self._grace_ms, "rotate"])
        return secret

    def secret(self, tenant: str) -> str:
        """The tenant's current signing secret, made on its first use: a tenant has one
        from its first webhook on, as a hosted API's default secret always exists."""
        return str(self._scripts.webhook_secret(keys=[keys.webhook_secret(tenant)],
                                                args=[signature.new_secret(), 0, "ensure"]))

    def signing_secrets(self, tenant: str) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        current, previous, until = cast(list[str | None], self._redis.hmget(
            keys.webhook_secret(tenant), "current", "previous", "previous_until"))
        chosen = [current] if current else []
        if previous and until and int(until) > now_ms():
            chosen.append(previous)
        return cast(list[str], chosen)


def _event_order(delivery: Mapping[str, Any]) -> tuple[int, int]:
    ms, _, seq = str(delivery["event_id"]).partition("-")
    return int(ms), int(seq or 0)


def _shown(d: Mapping[str, Any]) -> dict[str, Any]:
    attempts = d.get("attempts") or []
    return {
        "id": d["id"], "event_id": d["event_id"], "type": d["type"], "url": d["url"],
        "status": d["status"],
        "attempts": [{"n": a["n"], "at": _iso(a.get("at_ms")),
                      "status_code": a.get("status_code"), "error": a.get("error"),
                      "duration_ms": a.get("duration_ms")} for a in attempts],
        "next_attempt_at": _iso(d.get("next_ms")) if d["status"] == "pending" else None,
        "created_at": _iso(d.get("created_ms")),
    }


def _iso(ms: Any) -> str | None:
    return iso(int(ms)) if isinstance(ms, int | float) else None
