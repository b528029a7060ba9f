"""The windows outside a job's lease: a SIGKILLed worker's reserved messages come back.

A worker killed while it holds a message it has not claimed, or holds a step whose
outcome is recorded but whose continuation Celery has not published, loses nothing:
on Redis the live workers give the dead one's messages back (tasks/fleet/reservations.py),
on RabbitMQ the broker requeues them when the connection drops. Either way the job
completes within 30 s of the kill, once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from app.embedded_redis import RedisServer
from tasks.core import keys
from tasks.core.events import Feed, job_feed
from tests.support import fresh_database, wait_for
from tests.workers.conftest import Stack, StackFactory
from tests.workers.pause_points import armed, paused
from tests.workers.test_brokers import RABBITMQ, rabbitmq_answers

pytestmark = pytest.mark.slow
PLUGIN = {"CHORDLINE_HANDLER_MODULES": "tests.workers.pause_points"}


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_stack(request: pytest.FixtureRequest, make_stack: StackFactory,
                 redis_server: RedisServer) -> Iterator[Stack]:
    """A stack whose workers can be stopped at a pause point, on each broker."""
    if request.param == "redis":
        yield make_stack(fresh_database(redis_server.url), **PLUGIN)
        return
    if not rabbitmq_answers():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    queue = f"chordline-test-{uuid.uuid4().hex[:8]}"
    stack = make_stack(fresh_database(redis_server.url), CELERY_BROKER_URL=RABBITMQ,
                       CHORDLINE_QUEUE=queue, **PLUGIN)
    yield stack
    for process in stack.workers:
        process.stop()
    with Connection(RABBITMQ) as connection:
        connection.default_channel.queue_delete(queue)


def stop_at(stack: Stack, point: str) -> redis.Redis:
    client = stack.services.redis
    client.set(armed(point), "1")
    return client


def event_types(stack: Stack, feed: Feed) -> Counter[str]:
    return Counter(e["type"] for e in stack.services.events.read(feed))


def test_a_reserved_message_comes_back_when_its_worker_dies(broker_stack: Stack) -> None:
    # Given a worker that has received a job's message and handed it to its pool,
    # which stops before it claims the job
    client = stop_at(broker_stack, "before_claim")
    first = broker_stack.worker("a")
    job_id = broker_stack.submit({"type": "echo", "parameters": {"value": 1}})
    wait_for(lambda: client.get(paused("before_claim")) == job_id, 20,
             message="the worker to stop before its claim")
    assert broker_stack.job(job_id)["status"] == "pending"
    if broker_stack.services.settings.broker_is_redis:  # recorded with kombu's reservation
        held = client.keys(keys.reservations(f"{first.hostname}|*"))
        assert len(held) == 1 and client.hlen(held[0]) == 1

    # When that worker is SIGKILLed there, and another comes up
    first.kill()
    killed_at = time.monotonic()
    broker_stack.worker("b")

    # Then the job runs on the other worker within 30 s, once
    job = wait_for(lambda: (j := broker_stack.job(job_id))["status"] == "completed" and j,
                   30, interval=0.1, message="the job to complete after the kill")
    assert time.monotonic() - killed_at < 30
    assert (job["attempts"], job["lost"]) == (1, 0)
    types = event_types(broker_stack, job_feed(job_id))
    assert (types["job.started"], types["job.completed"]) == (1, 1)


def test_a_step_whose_continuation_was_not_sent_goes_on(broker_stack: Stack) -> None:
    # Given a two-step chain whose first step's worker records the step's outcome
    # and stops before Celery publishes the second step
    client = stop_at(broker_stack, "after_outcome")
    first = broker_stack.worker("a")
    workflow = broker_stack.services.workflows.create("tenant-a", {
        "name": "pair", "priority": 50, "steps": [
            {"type": "echo", "parameters": {"value": 0}, "retries": 0},
            {"type": "echo", "parameters": {"value": 1}, "retries": 0, "depends_on": [0]}]},
        "fault-test")
    head, tail = broker_stack.services.workflow_store.steps(workflow)
    assert head is not None and tail is not None
    wait_for(lambda: client.get(paused("after_outcome")) == head.id, 20,
             message="the first step's worker to stop after its outcome")
    assert broker_stack.job(head.id)["status"] == "completed"
    assert broker_stack.job(tail.id)["status"] == "pending"

    # When that worker is SIGKILLed there, and another comes up
    first.kill()
    killed_at = time.monotonic()
    broker_stack.worker("b")

    # Then the workflow goes on to its second step within 30 s, each step run once
    store = broker_stack.services.workflow_store
    wait_for(lambda: (w := store.get(workflow.id)) is not None and w["status"] == "completed",
             30, interval=0.1, message="the workflow to complete after the kill")
    assert time.monotonic() - killed_at < 30
    for step in (head, tail):
        job = broker_stack.job(step.id)
        assert (job["status"], job["attempts"]) == ("completed", 1)
        types = event_types(broker_stack, job_feed(step.id))
        assert (types["job.started"], types["job.completed"]) == (1, 1)
