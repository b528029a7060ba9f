"""Broker compatibility: the same jobs over RabbitMQ, with state still in Redis."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from app.embedded_redis import RedisServer
from tests.support import fresh_database, wait_for
from tests.workers.conftest import Stack, StackFactory

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbit_stack(make_stack: StackFactory, redis_server: RedisServer) -> Iterator[Stack]:
    if not rabbitmq_answers():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    queue = f"chordline-test-{uuid.uuid4().hex[:8]}"
    stack = make_stack(fresh_database(redis_server.url),
                       CELERY_BROKER_URL=RABBITMQ, CHORDLINE_QUEUE=queue)
    yield stack
    for process in stack.workers:
        process.stop()
    with Connection(RABBITMQ) as connection:
        connection.default_channel.queue_delete(queue)


def test_jobs_run_over_rabbitmq_with_priorities(rabbit_stack: Stack) -> None:
    rabbit_stack.worker("rabbit", concurrency=2)
    job_ids = [rabbit_stack.submit({"type": "echo", "priority": p, "parameters": {"value": p}})
               for p in (0, 50, 100)]
    for job_id in job_ids:
        job = wait_for(lambda j=job_id: (d := rabbit_stack.job(j))["status"] == "completed" and d,
                       30, interval=0.1, message="job over RabbitMQ")
        assert job["result"]["value"] == job["priority"]
