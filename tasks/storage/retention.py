"""Retention: the index entries of records that have expired, swept in O(expired).

Records, their events and their webhook deliveries expire by themselves (Redis
EXPIRE, set when a record is final); the global event log is trimmed by id (XTRIM
MINID). What Redis cannot expire is a member of a sorted set: each index keeps the
ids of jobs long gone until it is swept. The sweep never walks the keyspace (that
is every job): create.lua registers every tenant and job type that ever had a
record, and from those the sweep names each index and drops the members scored
before the cutoff, O(log n + expired) each: its cost grows with the tenants and job
types, never with the jobs kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import redis

from tasks.core import keys
from tasks.core.statuses import JobStatus, WorkflowStatus

# An index's name, as keys.py spells them: its scope (tenant or `*`) and what it holds.
INDEX_NAME = re.compile(rf"^{keys.PREFIX}:w?idx:(?P<scope>.+?):"
                        r"(?:all|status:[^:]+|type:(?P<type>.+))\Z")


class IndexSweep:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def run(self, cutoff_ms: int) -> int:
        """Drop index entries of records created before `cutoff_ms`; returns how many."""
        tenants, types = self._registered()
        pipe = self._redis.pipeline(transaction=False)
        for index in index_names(sorted(tenants), sorted(types)):
            pipe.zremrangebyscore(index, "-inf", f"({cutoff_ms * 1000}")
        return sum(int(n) for n in pipe.execute())

    def _registered(self) -> tuple[set[str], set[str]]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.smembers(keys.INDEX_TENANTS)
        pipe.smembers(keys.INDEX_TYPES)
        pipe.exists(keys.INDEX_BACKFILLED)
        tenants, types, backfilled = pipe.execute()
        tenants, types = set(map(str, tenants)), set(map(str, types))
        if not backfilled:
            old_tenants, old_types = self._register_existing()
            tenants, types = tenants | old_tenants, types | old_types
        return tenants, types

    def _register_existing(self) -> tuple[set[str], set[str]]:
        """Indexes written before tenants and types were registered (an upgrade, after
        which new records may already have registered theirs): found once, by the one
        walk of the keyspace this sweep ever makes."""
        tenants: set[str] = set()
        types: set[str] = set()
        for pattern in (keys.INDEX_PATTERN, keys.WORKFLOW_INDEX_PATTERN):
            for name in self._redis.scan_iter(match=pattern, count=1000):
                if found := INDEX_NAME.match(str(name)):
                    tenants.add(found["scope"])
                    if found["type"]:
                        types.add(found["type"])
        tenants.discard(keys.ALL_TENANTS)
        if tenants:
            self._redis.sadd(keys.INDEX_TENANTS, *tenants)
        if types:
            self._redis.sadd(keys.INDEX_TYPES, *types)
        self._redis.set(keys.INDEX_BACKFILLED, "1")
        return tenants, types


def index_names(tenants: list[str], types: list[str]) -> Iterator[str]:
    """Every index that records of these tenants and job types can be in."""
    for scope in [*tenants, keys.ALL_TENANTS]:
        yield keys.index_all(scope)
        yield from (keys.status_index(scope, status) for status in JobStatus)
        yield from (keys.type_index(scope, job_type) for job_type in types)
        yield keys.workflow_index_all(scope)
        yield from (keys.workflow_status_index(scope, status) for status in WorkflowStatus)
