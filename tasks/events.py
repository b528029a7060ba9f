"""Events: every change of a job, workflow or worker, as one record with a stable schema.

The Lua scripts that change a status append the event in the same atomic step
(lua/lib.lua `emit`), so the status endpoints and the history never disagree.
An event goes to three places: the global log (`keys.EVENT_LOG`, what operators
replay), the stream of the job and of its workflow (what a tenant replays, kept
as long as the record itself), and the live pub/sub channel. Its `id` is the
global log's stream id, the same in every stream, so ids order events and a
client resumes with `since`.

Pub/sub is at most once; the streams are the source of truth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, cast

import redis

from tasks import keys


class EventType(StrEnum):
    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_PROGRESS = "job.progress"
    JOB_RETRYING = "job.retrying"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    # A workflow step whose `when` condition was false (its dependents still run).
    JOB_SKIPPED = "job.skipped"
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    # The saga (tasks/saga.py): a workflow undoing its completed steps.
    WORKFLOW_COMPENSATING = "workflow.compensating"
    STEP_COMPENSATED = "step.compensated"
    STEP_COMPENSATION_FAILED = "step.compensation_failed"
    WORKFLOW_COMPENSATED = "workflow.compensated"
    WORKFLOW_COMPENSATION_FAILED = "workflow.compensation_failed"
    # No online machine can run the job yet (`data.reason`); it waits, and starts
    # by itself when one that fits comes online.
    JOB_UNSCHEDULABLE = "job.unschedulable"
    WORKER_ONLINE = "worker.online"
    WORKER_OFFLINE = "worker.offline"
    # The fleet (tasks/machines.py): a node registered and beating, changed (at
    # most every few seconds), asked to take no new jobs, or gone.
    MACHINE_ONLINE = "machine.online"
    MACHINE_UPDATED = "machine.updated"
    MACHINE_DRAINING = "machine.draining"
    MACHINE_OFFLINE = "machine.offline"
    # A webhook delivery (tasks/webhooks.py) answered 2xx, or was given up on; on the
    # stream of the job or workflow it was about. Never delivered as webhooks themselves.
    WEBHOOK_DELIVERED = "webhook.delivered"
    WEBHOOK_FAILED = "webhook.failed"


# The fields every event carries (besides `id`), in the order the API documents them.
FIELDS = ("type", "ts", "tenant", "job_id", "workflow_id", "step_index", "correlation_id",
          "worker", "data")
EVENT_ID = re.compile(r"^\d{1,20}(-\d{1,20})?\Z")
MAX_PAGE = 10_000
# The last id Redis could hold has no id after it: an exclusive range from it fails.
MAX_ID_PART = 2**64 - 2


class InvalidEventId(ValueError):
    """A `since` that is not a stream id."""


def parse_id(event_id: str) -> tuple[int, int]:
    """A stream id as a comparable pair (each part within Redis' 64 bits); raises
    InvalidEventId."""
    if not EVENT_ID.match(event_id):
        raise InvalidEventId(f"{event_id!r} is not an event id (like 1700000000000-0, or 0)")
    ms, _, seq = event_id.partition("-")
    pair = int(ms), int(seq or 0)
    if max(pair) > MAX_ID_PART:
        raise InvalidEventId(f"{event_id!r} is beyond any event id")
    return pair


def is_event_id(text: str) -> bool:
    try:
        parse_id(text)
    except InvalidEventId:
        return False
    return True


def after(since: str) -> str:
    """The start of an XRANGE that begins just after `since` (`0`: the beginning)."""
    return f"({since}" if since != "0" else "-"


def database_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0))


def lua_prelude(client: redis.Redis) -> str:
    """The names the scripts emit and queue to, from here and keys.py (one definition)."""
    types = ", ".join(f"{t.name} = '{t.value}'" for t in EventType)
    return (f"local EVENT_LOG = '{keys.EVENT_LOG}'\n"
            f"local EVENT_CHANNEL = '{keys.event_channel(database_of(client))}'\n"
            f"local SAGA_OUTBOX = '{keys.SAGA_OUTBOX}'\n"
            f"local ROUTES = '{keys.ROUTES}'\n"
            f"local ROUTES_USED = '{keys.ROUTES_USED}'\n"
            f"local WORKER_PREFIX = '{keys.WORKER_PREFIX}'\n"
            f"local WEBHOOK_OUTBOX = '{keys.WEBHOOK_OUTBOX}'\n"
            f"local WEBHOOK_QUEUE_SUFFIX = '{keys.WEBHOOK_QUEUE_SUFFIX}'\n"
            f"local EV = {{{types}}}\n")


def ordered(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its fields in the documented order (Lua's JSON has none)."""
    return {"id": event.get("id"), **{name: event.get(name) for name in FIELDS}}


class EventLog:
    """Reads the event history; the scripts write it."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self.channel = keys.event_channel(database_of(client))

    def read(self, stream: str, since: str = "0", limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` events of `stream` after `since` (exclusive), oldest first."""
        parse_id(since)
        entries = cast(list[tuple[str, dict[str, str]]], self._redis.xrange(
            stream, after(since), "+", count=min(limit, MAX_PAGE)))
        return [ordered({**json.loads(fields["event"]), "id": entry_id})
                for entry_id, fields in entries]

    def newest(self, stream: str, limit: int = 200) -> list[dict[str, Any]]:
        """The last `limit` events of `stream`, oldest first."""
        entries = cast(list[tuple[str, dict[str, str]]],
                       self._redis.xrevrange(stream, count=min(limit, MAX_PAGE)))
        return [ordered({**json.loads(fields["event"]), "id": entry_id})
                for entry_id, fields in reversed(entries)]

    def count_after(self, stream: str, since: str, limit: int) -> int:
        """How many events follow `since`, counting no further than `limit`."""
        entries = self._redis.xrange(stream, after(since), "+", count=limit)
        return len(cast(list[Any], entries))

    def last_id(self, stream: str) -> str:
        """The newest event's id (`0` for none): where a live feed that starts now resumes."""
        entries = cast(list[tuple[str, Any]], self._redis.xrevrange(stream, count=1))
        return entries[0][0] if entries else "0"

    def ids(self, stream: str) -> list[str]:
        entries = cast(list[tuple[str, Any]], self._redis.xrange(stream))
        return [entry_id for entry_id, _ in entries]

    def read_all(self, stream: str, since: str = "0") -> Iterator[dict[str, Any]]:
        """Every event of `stream` after `since`, a page at a time."""
        while page := self.read(stream, since, MAX_PAGE):
            yield from page
            since = page[-1]["id"]

    def trim(self, retention_seconds: int, now_ms: int) -> int:
        """Drop global-log events older than the retention (approximately, cheaply)."""
        return int(self._redis.xtrim(keys.EVENT_LOG, minid=now_ms - retention_seconds * 1000,
                                     approximate=True))
