"""The job store and lifecycle scripts, directly against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from tasks.core import keys
from tasks.core.events import EVERYTHING, EventLog
from tasks.jobs.lifecycle import Lease, Lifecycle
from tasks.jobs.store import InvalidCursor, JobStore
from tests.tasks.conftest import new_job

FAR = 2**62


def test_create_indexes_the_job_under_its_tenant_and_all(store: JobStore,
                                                          client: redis.Redis) -> None:
    store.create("j1", new_job("t1"), outbox_due_ms=None)
    for scope in ("t1", keys.ALL_TENANTS):
        assert client.zscore(keys.index_all(scope), "j1") is not None
        assert client.zscore(keys.status_index(scope, "pending"), "j1") is not None
        assert client.zscore(keys.type_index(scope, "echo"), "j1") is not None
    assert store.get("j1", "t2") is None and store.get("j1", "t1") is not None


def test_a_job_id_cannot_be_created_twice(store: JobStore) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    with pytest.raises(redis.ResponseError):
        store.create("j1", new_job(), outbox_due_ms=None)


def test_every_transition_moves_the_status_indexes_with_the_hash(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    claim = lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    assert claim.outcome == "claimed" and claim.job is not None
    assert claim.job["attempts"] == 1
    assert lifecycle.complete("j1", "tok", {"ok": True}).outcome == "ok"
    for scope in ("t1", keys.ALL_TENANTS):
        members = {s: client.zscore(keys.status_index(scope, s), "j1")
                   for s in ("pending", "running", "completed")}
        assert members["pending"] is None and members["running"] is None
        assert members["completed"] is not None
    assert client.ttl(keys.job("j1")) > 0
    assert client.zscore(keys.LEASES, "j1") is None
    assert client.sismember(keys.worker_jobs("w1"), "j1") == 0


def test_a_live_lease_turns_a_second_delivery_away(store: JobStore, lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    assert lifecycle.claim("j1", "first", "w1", "m", FAR).outcome == "claimed"
    assert lifecycle.claim("j1", "second", "w2", "m", FAR).outcome == "busy"


def test_an_expired_lease_counts_a_lost_delivery_then_poisons(
        store: JobStore, lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "first", "w1", "m", FAR)
    time.sleep(0.4)
    retaken = lifecycle.claim("j1", "second", "w2", "m", FAR)
    assert retaken.outcome == "claimed" and retaken.job is not None
    assert retaken.job["lost"] == 1
    time.sleep(0.4)
    poisoned = lifecycle.claim("j1", "third", "w3", "m", FAR)
    assert (poisoned.outcome, poisoned.status) == ("poisoned", "failed")
    assert store.get("j1") is not None and store.get("j1")["error"]["code"] == "WORKER_LOST"


def test_a_superseded_run_can_neither_renew_nor_finish(store: JobStore,
                                                        lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "old", "w1", "m", FAR)
    time.sleep(0.4)
    lifecycle.claim("j1", "new", "w2", "m", FAR)
    assert lifecycle.heartbeat("j1", "old") is Lease.LOST
    assert lifecycle.complete("j1", "old", {"stale": True}).outcome == "lost"
    assert lifecycle.complete("j1", "new", {"fresh": True}).outcome == "ok"
    assert store.get("j1")["result"] == {"fresh": True}


@pytest.mark.parametrize("status", ["cancelled", "completed", "failed"])
def test_finished_or_cancelled_jobs_are_never_claimed(
        store: JobStore, lifecycle: Lifecycle, status: str) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    if status == "cancelled":
        store.cancel("j1", "t1", "stop")
    else:
        lifecycle.claim("j1", "tok", "w", "m", FAR)
        (lifecycle.complete if status == "completed" else
         lambda *a: lifecycle.fail("j1", "tok", "X", "y"))("j1", "tok", {})
    assert lifecycle.claim("j1", "again", "w", "m", FAR).outcome == "skip"


def test_cancel_only_touches_pending_jobs_of_the_tenant(store: JobStore,
                                                        lifecycle: Lifecycle) -> None:
    store.create("j1", new_job("t1"), outbox_due_ms=None)
    assert store.cancel("j1", "t2", "x")[0] == "missing"
    lifecycle.claim("j1", "tok", "w", "m", FAR)
    assert store.cancel("j1", "t1", "x") == ("conflict", "running")


def test_the_reaper_script_requeues_then_fails_an_abandoned_job(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w", "m", FAR)
    assert lifecycle.reap("j1") == "alive"
    time.sleep(0.4)
    assert lifecycle.expired_leases() == ["j1"]
    assert lifecycle.reap("j1") == "requeued"
    assert store.get("j1").status == "pending"
    assert client.zscore(keys.OUTBOX, "j1") is not None
    lifecycle.claim("j1", "tok2", "w", "m", FAR)
    time.sleep(0.4)
    assert lifecycle.reap("j1") == "poisoned"


def test_the_reaper_fails_a_job_past_its_hard_deadline(store: JobStore,
                                                       lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w", "m", hard_deadline_ms=1)
    time.sleep(0.4)
    assert lifecycle.reap("j1") == "timed_out"
    assert store.get("j1")["error"]["code"] == "JOB_TIMEOUT"


def test_retry_puts_the_job_back_in_pending_under_the_outbox(
        store: JobStore, lifecycle: Lifecycle, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w", "m", FAR)
    assert lifecycle.retry("j1", "tok", "E", "boom", 1, countdown=10).outcome == "ok"
    job = store.get("j1")
    assert job.status == "pending" and job["retry_count"] == 1
    assert client.zscore(keys.OUTBOX, "j1") > time.time() * 1000 + 9000


def test_progress_only_moves_forward(store: JobStore, lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    lifecycle.claim("j1", "tok", "w", "m", FAR)
    lifecycle.heartbeat("j1", "tok", renew=False, progress=40)
    lifecycle.heartbeat("j1", "tok", renew=False, progress=20)
    assert store.get("j1")["progress"] == 40


def test_pages_cover_every_job_once_newest_first(store: JobStore) -> None:
    ids = [f"j{i:02d}" for i in range(25)]
    for job_id in ids:
        store.create(job_id, new_job(job_type="echo" if int(job_id[1:]) % 2 else "sleep"),
                     outbox_due_ms=None)
    seen, cursor = [], None
    while True:
        page = store.page("t1", limit=7, cursor=cursor)
        seen += [j.id for j in page.jobs]
        if not (cursor := page.next_cursor):
            break
    assert seen == ids[::-1]
    echo = store.page("t1", status="pending", job_type="echo", limit=100)
    assert [j.id for j in echo.jobs] == [i for i in ids[::-1] if int(i[1:]) % 2]


def test_a_forged_cursor_is_refused(store: JobStore) -> None:
    with pytest.raises(InvalidCursor):
        store.page("t1", cursor="not-base64-float!")


def test_stats_count_by_status_and_type_within_the_window(
        store: JobStore, lifecycle: Lifecycle) -> None:
    for job_id, job_type in (("a", "echo"), ("b", "echo"), ("c", "sleep")):
        store.create(job_id, new_job(job_type=job_type), outbox_due_ms=None)
    lifecycle.claim("a", "tok", "w", "m", FAR)
    stats = store.stats("t1", since_ms=0, job_types=["echo", "sleep", "fail"])
    assert (stats["total"], stats["pending"], stats["running"]) == (3, 2, 1)
    assert stats["by_type"] == {"echo": 2, "sleep": 1}
    assert store.stats("t1", since_ms=2**41, job_types=["echo"])["total"] == 0


def test_delete_removes_every_trace_of_an_unpublished_job(
        store: JobStore, client: redis.Redis) -> None:
    store.create("j1", new_job(), outbox_due_ms=1)
    store.delete("j1")
    # The fleet's counters (tasks/core/metrics.py) saw a submission and an event go out, and
    # keep saying so: a Prometheus counter never goes back.
    kept = (keys.SEQUENCE, keys.EVENT_LOG, keys.INDEX_TENANTS, keys.INDEX_TYPES)
    left = [k for k in client.scan_iter() if k not in kept]
    assert [k for k in left if not k.startswith(f"{keys.PREFIX}:metrics:")] == []
    # The global log's reference to its event leads nowhere now: no event is told.
    assert EventLog(client).read(EVERYTHING) == []
