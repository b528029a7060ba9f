"""Store-level fixtures over the root `client`: the session Redis, in a database of its own."""

from __future__ import annotations

import pytest
import redis

from tasks.jobs.lifecycle import LeasePolicy, Lifecycle
from tasks.jobs.store import JobStore, NewJob


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
