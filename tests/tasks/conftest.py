"""Store-level tests talk to the session Redis directly, with a fresh database each."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from app.embedded_redis import RedisServer
from tasks.lifecycle import LeasePolicy, Lifecycle
from tasks.store import JobStore, NewJob

_databases = itertools.count(8)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    db = 8 + next(_databases) % 4
    connection = redis.Redis(port=redis_server.port, db=db, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client, retention=3600)


@pytest.fixture
def lifecycle(client: redis.Redis) -> Lifecycle:
    return Lifecycle(client, LeasePolicy(lease_seconds=0.3, max_deliveries=2,
                                         outbox_grace=0.2, retention=3600))


def new_job(tenant: str = "t1", job_type: str = "echo") -> NewJob:
    return NewJob(tenant=tenant, type=job_type, prompt=None, parameters={}, priority=50,
                  requirements={}, correlation_id="c", timeout=60)
