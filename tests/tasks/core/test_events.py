"""Events are written by the scripts that change the state, in the same atomic step."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import redis

from tasks.core import keys
from tasks.core.events import EVERYTHING, EventLog, EventType, Feed, job_feed, workflow_feed
from tasks.fleet.machines import MachineStore
from tasks.fleet.profile import NodeProfile
from tasks.jobs.lifecycle import Lifecycle
from tasks.jobs.store import JobStore
from tests.tasks.conftest import new_job

FAR = 2**62


def history(client: redis.Redis, feed: Feed = EVERYTHING) -> list[dict[str, Any]]:
    return EventLog(client).read(feed)


def types(client: redis.Redis, feed: Feed = EVERYTHING) -> list[str]:
    return [e["type"] for e in history(client, feed)]


def test_a_jobs_life_is_told_in_its_history_and_the_global_log(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job("t1"), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    lifecycle.heartbeat("j1", "tok", progress=40)
    lifecycle.complete("j1", "tok", {"value": 1})
    expected = [EventType.JOB_QUEUED, EventType.JOB_STARTED, EventType.JOB_PROGRESS,
                EventType.JOB_COMPLETED]
    assert types(client, job_feed("j1")) == expected
    assert history(client, job_feed("j1")) == history(client)
    started, progress, completed = history(client)[1:]
    assert started["worker"] == "w1" and started["data"] == {"attempt": 1, "machine_id": "m1"}
    assert progress["data"] == {"progress": 40}
    assert completed["data"] == {"result": {"value": 1}} and completed["tenant"] == "t1"
    assert completed["correlation_id"] == "c" and completed["workflow_id"] is None


def test_a_jobs_events_are_kept_once_in_its_record_and_go_with_it(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    store.cancel("j1", keys.ALL_TENANTS, "no longer needed")
    assert client.ttl(keys.job("j1")) > 0
    assert history(client)[-1]["data"]["error"]["code"] == "JOB_CANCELLED"
    # The global log refers to the record; the record holds the one copy.
    entries = client.xrange(keys.EVENT_LOG)
    assert [fields for _, fields in entries] == [{"job": "j1"}] * 2
    assert [k for k in client.scan_iter(match="*:job:*")] == [keys.job("j1")]
    client.delete(keys.job("j1"))  # as when the record expires
    assert history(client) == [] and history(client, job_feed("j1")) == []


def test_a_finished_job_keeps_its_last_progress_event(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    for progress in (10, 20, 30):
        lifecycle.heartbeat("j1", "tok", progress=progress)
    while_running = history(client, job_feed("j1"))
    assert [e["data"].get("progress") for e in while_running[2:]] == [10, 20, 30]
    lifecycle.complete("j1", "tok", {"value": 1})
    kept = [EventType.JOB_QUEUED, EventType.JOB_STARTED, EventType.JOB_PROGRESS,
            EventType.JOB_COMPLETED]
    assert types(client, job_feed("j1")) == kept == types(client)
    assert history(client, job_feed("j1"))[2] == while_running[-1]
    # A page of the global log fills from further on past the events thinned away.
    first = EventLog(client).read(EVERYTHING, limit=3)
    assert [e["type"] for e in first] == kept[:3]
    rest = EventLog(client).read(EVERYTHING, since=first[-1]["id"], limit=3)
    assert [e["type"] for e in rest] == kept[3:]
    assert EventLog(client).count_after(job_feed("j1"), "0", 10) == 4


def test_a_workflows_history_holds_its_steps_events_in_order(
        store: JobStore, client: redis.Redis) -> None:
    for n in range(3):
        store.create(f"s{n}", replace(new_job(), workflow_id="wf", extra={"step_index": n}),
                     outbox_due_ms=None)
    client.hset(keys.workflow("wf"), mapping={"id": "wf", "tenant": "t", "job_ids":
                                              json.dumps(["s0", "s1", "s2"])})
    steps = history(client, workflow_feed("wf"))
    assert [(e["job_id"], e["step_index"]) for e in steps] == [("s0", 0), ("s1", 1), ("s2", 2)]
    assert EventLog(client).last_id(workflow_feed("wf")) == steps[-1]["id"]


def test_a_refused_transition_writes_no_event(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m", FAR)
    before = types(client)
    assert lifecycle.claim("j1", "other", "w2", "m", FAR).outcome == "busy"
    assert lifecycle.complete("j1", "stolen", {}).outcome == "lost"
    assert not lifecycle.heartbeat("j1", "stolen", progress=50)
    assert lifecycle.heartbeat("j1", "tok", progress=0)  # no progress made: nothing to say
    assert types(client) == before


def test_retries_and_lost_workers_are_announced(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m", FAR)
    lifecycle.retry("j1", "tok", "HANDLER_ERROR", "boom", retry_count=1, countdown=0)
    retrying = history(client)[-1]
    assert retrying["type"] == EventType.JOB_RETRYING
    assert retrying["data"]["retry_count"] == 1 and retrying["data"]["error"]["message"] == "boom"
    lifecycle.claim("j1", "tok2", "w1", "m", FAR)
    client.zadd(keys.LEASES, {"j1": 0})
    assert lifecycle.reap("j1") == "requeued"
    assert history(client)[-1]["data"]["error"]["code"] == "WORKER_LOST"


def test_a_failure_carries_its_error(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m", FAR)
    lifecycle.fail("j1", "tok", "HANDLER_ERROR", "bad prompt")
    failed = history(client)[-1]
    assert failed["type"] == EventType.JOB_FAILED
    assert failed["data"]["error"]["code"] == "HANDLER_ERROR"


def test_workers_go_online_and_offline_with_their_heartbeat(client: redis.Redis) -> None:
    machines = MachineStore(client, liveness_s=1, retention_s=60)
    node = NodeProfile("m1")
    assert machines.beat("a@h", {"concurrency": 2}, node, {}) == []
    assert machines.beat("b@h", {"concurrency": 2}, node, {}) == []
    assert machines.beat("a@h", {}, node, {}) == []  # still online: nothing to say
    # b stops beating (SIGKILL); a's next beat after the liveness window sees it gone
    time.sleep(0.6)
    machines.beat("a@h", {}, node, {})
    time.sleep(0.6)
    assert machines.beat("a@h", {}, node, {}) == ["b@h"]
    machines.gone("a@h")
    worker_events = [e for e in history(client) if e["type"].startswith("worker.")]
    assert [(e["type"], e["worker"], e["data"].get("reason")) for e in worker_events] == [
        (EventType.WORKER_ONLINE, "a@h", None), (EventType.WORKER_ONLINE, "b@h", None),
        (EventType.WORKER_OFFLINE, "b@h", "heartbeat_lost"),
        (EventType.WORKER_OFFLINE, "a@h", "shutdown")]
    assert all(e["tenant"] is None for e in history(client))


def test_events_publish_on_the_databases_own_channel(
        store: JobStore, client: redis.Redis) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EventLog(client).channel)
    pubsub.get_message(timeout=1)
    store.create("j1", new_job(), outbox_due_ms=None)
    message = pubsub.get_message(timeout=2)
    assert message is not None
    live = json.loads(message["data"])
    stored = history(client)[0]
    assert live == stored and live["id"] == stored["id"]
    assert EventLog(client).channel.endswith(f":{client.connection_pool.connection_kwargs['db']}")
    pubsub.close()


def test_trim_drops_what_is_older_than_the_retention(
        store: JobStore, client: redis.Redis) -> None:
    for n in range(300):
        store.create(f"j{n}", new_job(), outbox_due_ms=None)
    log = EventLog(client)
    newest = int(log.last_id(EVERYTHING).split("-")[0])
    assert log.trim(retention_seconds=3600, now_ms=newest) == 0
    log.trim(retention_seconds=1, now_ms=newest + 60_000)
    assert client.xlen(keys.EVENT_LOG) < 300
    assert len(history(client, job_feed("j0"))) == 1, "a job's own history follows the job"


def test_a_record_from_before_the_upgrade_keeps_its_history(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    """A record created when events were copied to a stream of its own (`events_key`)
    and into the global log whole: its old events and its new ones, in order."""
    old = {"type": "job.queued", "ts": "2026-11-30T10:00:00.000Z", "tenant": "t1",
           "job_id": "j1", "workflow_id": None, "step_index": None, "correlation_id": "c",
           "worker": None, "data": {"type": "echo"}}
    event_id = client.xadd(keys.EVENT_LOG, {"event": json.dumps(old)})
    client.xadd(keys.job("j1") + ":events", {"event": json.dumps(old)}, id=event_id)
    client.hset(keys.job("j1"), mapping={
        "id": "j1", "tenant": "t1", "type": "echo", "status": "pending", "seq": 1,
        "correlation_id": "c", "timeout": 60, "events_key": keys.job("j1") + ":events"})
    assert lifecycle.claim("j1", "tok", "w1", "m1", FAR).outcome == "claimed"
    told = history(client, job_feed("j1"))
    assert [e["type"] for e in told] == [EventType.JOB_QUEUED, EventType.JOB_STARTED]
    assert told[0] == {"id": event_id, **old}
    assert history(client) == told


def test_a_record_stays_compact_through_a_hundred_progress_events(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    """With the tuning of app/embedded_redis.py, as make run and compose start Redis."""
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    for progress in range(1, 101):
        lifecycle.heartbeat("j1", "tok", progress=progress)
    assert client.object("encoding", keys.job("j1")) == "listpack"
    lifecycle.complete("j1", "tok", {"value": 1})
    assert client.object("encoding", keys.job("j1")) == "listpack"
    assert types(client, job_feed("j1")).count(EventType.JOB_PROGRESS) == 1


def test_a_retried_job_keeps_the_last_progress_of_its_run(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    for progress in (10, 20):
        lifecycle.heartbeat("j1", "tok", progress=progress)
    lifecycle.retry("j1", "tok", "HANDLER_ERROR", "boom", retry_count=1, countdown=0)
    told = history(client, job_feed("j1"))
    assert [e["data"]["progress"] for e in told if e["type"] == EventType.JOB_PROGRESS] == [20]
    assert told[-1]["type"] == EventType.JOB_RETRYING

