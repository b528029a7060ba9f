"""Store-level tests talk to the session Redis directly, in a database of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from app.embedded_redis import RedisServer
from tasks.lifecycle import LeasePolicy, Lifecycle
from tasks.store import JobStore, NewJob
from tests.support import fresh_database


@pytest.fixture(scope="session")
def store_database(redis_server: RedisServer) -> str:
    """One database for all store tests, flushed around each of them."""
    return fresh_database(redis_server.url)


@pytest.fixture
def client(store_database: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(store_database, decode_responses=True)
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
