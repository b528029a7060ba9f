"""The retention sweep drops expired index entries without walking the keyspace."""

from __future__ import annotations

from typing import Any

import redis

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.statuses import JobStatus
from tasks.jobs.store import JobStore
from tasks.storage.retention import IndexSweep, index_names
from tests.tasks.conftest import new_job


def calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def backdate(client: redis.Redis, job_id: str, tenant: str, job_type: str,
             score: int) -> None:
    """Move a job's index entries back in time, as if it was created at `score`."""
    for scope in keys.index_scopes(tenant):
        for index in (keys.index_all(scope), keys.type_index(scope, job_type),
                      keys.status_index(scope, JobStatus.PENDING)):
            client.zadd(index, {job_id: score})


def create(store: JobStore, client: redis.Redis, count: int, old: int) -> None:
    """`count` jobs of two tenants and two types, the first `old` of them long expired."""
    long_ago = (now_ms() - 30 * 86400 * 1000) * 1000
    for n in range(count):
        tenant, job_type = f"t{n % 2}", ("echo", "sleep")[n % 2]
        store.create(f"j{n}", new_job(tenant, job_type), outbox_due_ms=None)
        if n < old:
            backdate(client, f"j{n}", tenant, job_type, long_ago + n)


def test_the_sweep_drops_only_what_is_older_than_the_cutoff(
        store: JobStore, client: redis.Redis) -> None:
    create(store, client, 20, old=6)
    dropped = IndexSweep(client).run(now_ms() - 86400 * 1000)
    assert dropped == 6 * 6  # each old job: all, type and status, in its tenant's and in '*'
    assert client.zcard(keys.index_all(keys.ALL_TENANTS)) == 14
    assert client.zcard(keys.status_index("t0", JobStatus.PENDING)) == 7
    assert client.zcard(keys.type_index("t1", "sleep")) == 7
    assert IndexSweep(client).run(now_ms() - 86400 * 1000) == 0


def test_the_sweep_costs_the_same_for_ten_times_the_jobs(
        store: JobStore, client: redis.Redis) -> None:
    """Its commands depend on the tenants and job types, not on how many jobs there are:
    no SCAN, one ZREMRANGEBYSCORE per index."""
    expected = len(list(index_names(["t0", "t1"], ["echo", "sleep"])))
    for count in (40, 400):
        client.flushdb()
        client.set(keys.INDEX_BACKFILLED, "1")  # the first sweep's one look, already made
        create(store, client, count, old=count // 4)
        client.config_resetstat()
        assert IndexSweep(client).run(now_ms() - 86400 * 1000) == count // 4 * 6
        assert calls(client, "scan") == 0
        assert calls(client, "zremrangebyscore") == expected


def test_indexes_from_before_the_registry_are_found_once(
        store: JobStore, client: redis.Redis) -> None:
    create(store, client, 8, old=4)
    client.delete(keys.INDEX_TENANTS, keys.INDEX_TYPES)  # written by an older version
    # and, after the upgrade, before the first sweep, a new job of another tenant
    store.create("new", new_job("t2", "upscale"), outbox_due_ms=None)
    assert IndexSweep(client).run(now_ms() - 86400 * 1000) == 4 * 6
    assert client.smembers(keys.INDEX_TENANTS) == {"t0", "t1", "t2"}
    assert client.smembers(keys.INDEX_TYPES) == {"echo", "sleep", "upscale"}
    client.config_resetstat()
    IndexSweep(client).run(now_ms() - 86400 * 1000)
    assert calls(client, "scan") == 0
