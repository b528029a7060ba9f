"""Events: every change of a job, workflow or worker, as one record with a stable schema.

The Lua scripts that change a status append the event in the same atomic step
(`emit`, tasks/core/lua/prelude/2_events.lua), so the status endpoints and the history
never disagree.

Each event is kept once. A job's or workflow's event lives in that record's own
hash (a field `e:<id>`, `p:<id>` for progress), as long as the record, holding
only what the record does not already say (its type, time, worker and data); the
record supplies the rest (tenant, ids, step, correlation id) when it is read. The
global log (`keys.EVENT_LOG`, what operators replay) keeps, in order, a reference
to each (`job <id>` or `workflow <id>`), and the events of no record (workers,
machines) whole; it is trimmed to `event_retention` (at most the records' retention,
so its references lead somewhere). A job that stops running (it finished, or waits to
run again) keeps only its last progress event. A workflow's steps expire with it.
Every event is also published live on the pub/sub channel. Its `id` is the global
log's stream id, so ids order events and a client resumes with `since`.

Pub/sub is at most once; the stored events are the source of truth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, cast

import redis

from tasks.core import keys
from tasks.core.errors import InvalidInput


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
    # The saga (tasks/workflows/saga.py): a workflow undoing its completed steps.
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
    # The fleet (tasks/fleet/machines.py): a node registered and beating, changed (at
    # most every few seconds), asked to take no new jobs, or gone.
    MACHINE_ONLINE = "machine.online"
    MACHINE_UPDATED = "machine.updated"
    MACHINE_DRAINING = "machine.draining"
    MACHINE_OFFLINE = "machine.offline"
    # A webhook delivery (tasks/webhooks/store.py) answered 2xx, or was given up on; on the
    # history of the job or workflow it was about. Never delivered as webhooks themselves.
    WEBHOOK_DELIVERED = "webhook.delivered"
    WEBHOOK_FAILED = "webhook.failed"


# The fields every event carries (besides `id`), in the order the API documents them.
FIELDS = ("type", "ts", "tenant", "job_id", "workflow_id", "step_index", "correlation_id",
          "worker", "data")
EVENT_ID = re.compile(r"^\d{1,20}(-\d{1,20})?\Z")
MAX_PAGE = 10_000
# The last id Redis could hold has no id after it: an exclusive range from it fails.
MAX_ID_PART = 2**64 - 2


class InvalidEventId(InvalidInput):
    """A `since` that is not a stream id."""

    default_code = "INVALID_EVENT_ID"


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


# A feed: the events of one job ("job", id) or workflow ("workflow", id; its
# steps' too), or every event (EVERYTHING).
Feed = tuple[str, str]
EVERYTHING: Feed = ("all", keys.ALL_TENANTS)
# The hash fields that hold a record's events, by the event's id.
EVENT_FIELD = "e:"
PROGRESS_FIELD = "p:"
# What the global log's entries hold: a reference to a record's event, or a whole event.
REFERENCE_KINDS = ("job", "workflow")
WHOLE = "event"


def job_feed(job_id: str) -> Feed:
    return ("job", job_id)


def workflow_feed(workflow_id: str) -> Feed:
    return ("workflow", workflow_id)


def database_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0))


def lua_prelude(client: redis.Redis) -> str:
    """The names the scripts emit and queue to, from here and keys.py (one definition)."""
    types = ", ".join(f"{t.name} = '{t.value}'" for t in EventType)
    return (f"local EVENT_LOG = '{keys.EVENT_LOG}'\n"
            f"local EVENT_CHANNEL = '{keys.event_channel(database_of(client))}'\n"
            f"local EVENT_FIELD = '{EVENT_FIELD}'\n"
            f"local PROGRESS_FIELD = '{PROGRESS_FIELD}'\n"
            f"local SAGA_OUTBOX = '{keys.SAGA_OUTBOX}'\n"
            f"local ROUTES = '{keys.ROUTES}'\n"
            f"local ROUTES_USED = '{keys.ROUTES_USED}'\n"
            f"local WORKER_PREFIX = '{keys.WORKER_PREFIX}'\n"
            f"local WEBHOOK_OUTBOX = '{keys.WEBHOOK_OUTBOX}'\n"
            f"local WEBHOOK_QUEUE_SUFFIX = '{keys.WEBHOOK_QUEUE_SUFFIX}'\n"
            f"local EV = {{{types}}}\n"
            f"local EVENT_ORDER = {{{', '.join(repr(n) for n in ('id', *FIELDS))}}}\n"
            + keys.lua_functions())


def ordered(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its fields in the documented order (Lua's JSON has none)."""
    return {"id": event.get("id"), **{name: event.get(name) for name in FIELDS}}


def _subject(kind: str, record: dict[str, str]) -> dict[str, Any]:
    """What a record says of each of its events (the fields they do not store)."""
    if kind == "workflow":
        return {"tenant": record.get("tenant") or None, "job_id": None,
                "workflow_id": record.get("id") or None, "step_index": None,
                "correlation_id": record.get("correlation_id") or None}
    step = record.get("step_index")
    return {"tenant": record.get("tenant") or None, "job_id": record.get("id") or None,
            "workflow_id": record.get("workflow_id") or None,
            "step_index": int(step) if step not in (None, "") else None,
            "correlation_id": record.get("correlation_id") or None}


def _stored(event_id: str, body: str, subject: dict[str, Any]) -> dict[str, Any]:
    """An event a record keeps, with what the record says of it."""
    return ordered({**subject, **json.loads(body), "id": event_id})


def _whole(event_id: str, body: str) -> dict[str, Any]:
    """An event kept whole: the global log's of no record, or an older record's stream's."""
    return ordered({**json.loads(body), "id": event_id})


def _record_key(kind: str, ident: str) -> str:
    return keys.job(ident) if kind == "job" else keys.workflow(ident)


def is_event_field(name: str) -> bool:
    """Whether a record's hash field holds one of its events, not one of its own fields."""
    return name.startswith((EVENT_FIELD, PROGRESS_FIELD))


# Events beside their parsed ids, which sort them.
Keyed = list[tuple[tuple[int, int], dict[str, Any]]]


def record_events(kind: str, record: dict[str, str]) -> Keyed:
    """A record's own events (a hash as HGETALL reads it)."""
    subject = _subject(kind, record)
    found: Keyed = []
    for name, body in record.items():
        if is_event_field(name):
            event_id = name[len(EVENT_FIELD):]  # both prefixes are two characters long
            found.append((parse_id(event_id), _stored(event_id, body, subject)))
    return found


class EventLog:
    """Reads the event history; the scripts write it."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self.channel = keys.event_channel(database_of(client))

    def read(self, feed: Feed, since: str = "0", limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` events of `feed` after `since` (exclusive), oldest first."""
        low, limit = parse_id(since), min(limit, MAX_PAGE)
        if feed == EVERYTHING:
            return self._read_log(since, limit)
        return [e for key, e in self._history(feed) if key > low][:limit]

    def newest(self, feed: Feed, limit: int = 200) -> list[dict[str, Any]]:
        """The last `limit` events of `feed`, oldest first."""
        limit = min(limit, MAX_PAGE)
        if feed != EVERYTHING:
            return [e for _, e in self._history(feed)][-limit:]
        entries = cast(list[tuple[str, dict[str, str]]],
                       self._redis.xrevrange(keys.EVENT_LOG, count=limit))
        return self._resolve(list(reversed(entries)))

    def count_after(self, feed: Feed, since: str, limit: int) -> int:
        """How many events follow `since`, counting no further than `limit` (for the
        global log, its entries: an event thinned away still counts)."""
        if feed != EVERYTHING:
            return len(self.read(feed, since, limit))
        entries = self._redis.xrange(keys.EVENT_LOG, after(since), "+", count=limit)
        return len(cast(list[Any], entries))

    def last_id(self, feed: Feed) -> str:
        """The newest event's id (`0` for none): where a live feed that starts now resumes."""
        if feed != EVERYTHING:
            history = self._history(feed)
            return history[-1][1]["id"] if history else "0"
        entries = cast(list[tuple[str, Any]], self._redis.xrevrange(keys.EVENT_LOG, count=1))
        return entries[0][0] if entries else "0"

    def read_all(self, feed: Feed, since: str = "0") -> Iterator[dict[str, Any]]:
        """Every event of `feed` after `since`, a page at a time."""
        while page := self.read(feed, since, MAX_PAGE):
            yield from page
            since = page[-1]["id"]

    def trim(self, retention_seconds: int, now_ms: int) -> int:
        """Drop global-log events older than the retention (approximately, cheaply)."""
        return int(self._redis.xtrim(keys.EVENT_LOG, minid=now_ms - retention_seconds * 1000,
                                     approximate=True))

    def _history(self, feed: Feed) -> Keyed:
        """A job's events, or a workflow's with its steps', in order: a record's history
        is short (a finished job keeps one progress event), so it is read whole."""
        kind, ident = feed
        record = cast(dict[str, str], self._redis.hgetall(_record_key(kind, ident)))
        found = record_events(kind, record) + self._written_before(record)
        if kind == "workflow" and record.get("job_ids"):
            pipe = self._redis.pipeline(transaction=False)
            for step_id in json.loads(record["job_ids"]):
                pipe.hgetall(keys.job(step_id))
            for step in pipe.execute():
                found += record_events("job", step)
        # By id, once: an event of a record written before the upgrade (below) is in the
        # workflow's stream and in its step's.
        return sorted({key: event for key, event in found}.items())

    def _written_before(self, record: dict[str, str]) -> Keyed:
        """The events of a record created before events were kept in it: they are in a
        stream of its own that its `events_key` names (copies, the steps' among them for
        a workflow), which expires with it. Its later events are in the record."""
        stream = record.get("events_key")
        if not stream:
            return []
        entries = cast(list[tuple[str, dict[str, str]]], self._redis.xrange(stream))
        return [(parse_id(entry_id), _whole(entry_id, fields[WHOLE]))
                for entry_id, fields in entries if WHOLE in fields]

    def _read_log(self, since: str, limit: int) -> list[dict[str, Any]]:
        """A page of the global log; references to events thinned away since (progress)
        or to records gone are passed over, and the page fills from further on."""
        events: list[dict[str, Any]] = []
        while len(events) < limit:
            entries = cast(list[tuple[str, dict[str, str]]], self._redis.xrange(
                keys.EVENT_LOG, after(since), "+", count=limit))
            events += self._resolve(entries)
            if len(entries) < limit:
                break
            since = entries[-1][0]
        # The next page begins after the last event given, so any read past it is read again.
        return events[:limit]

    def _resolve(self, entries: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
        """The events of global-log entries: whole ones as they are, references read
        from their records (each record once)."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for entry_id, fields in entries:
            for kind in REFERENCE_KINDS:
                if kind in fields:
                    wanted.setdefault((kind, fields[kind]), []).append(entry_id)
        found = self._fetch(wanted)
        events = []
        for entry_id, fields in entries:
            if WHOLE in fields:
                events.append(_whole(entry_id, fields[WHOLE]))
            elif (event := found.get(entry_id)) is not None:
                events.append(event)
        return events

    def _fetch(self, wanted: dict[tuple[str, str], list[str]]) -> dict[str, dict[str, Any]]:
        subject_fields = ("id", "tenant", "workflow_id", "step_index", "correlation_id")
        pipe = self._redis.pipeline(transaction=False)
        for (kind, ident), ids in wanted.items():
            names = [prefix + i for i in ids for prefix in (EVENT_FIELD, PROGRESS_FIELD)]
            pipe.hmget(_record_key(kind, ident), [*subject_fields, *names])
        found: dict[str, dict[str, Any]] = {}
        for ((kind, _), ids), values in zip(wanted.items(), pipe.execute(), strict=True):
            own, bodies = values[:len(subject_fields)], values[len(subject_fields):]
            subject = _subject(kind, {k: v for k, v in zip(subject_fields, own, strict=True) if v})
            for index, event_id in enumerate(ids):
                body = bodies[2 * index] or bodies[2 * index + 1]
                if body is not None:
                    found[event_id] = _stored(event_id, body, subject)
        return found
