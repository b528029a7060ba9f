"""The message a new job is queued with, held to what Celery and kombu would push."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tasks.celery_app import celery_config
from tasks.core.settings import Settings
from tasks.jobs.dispatch import Dispatcher, JobCall
from tasks.jobs.lifecycle import LeasePolicy, Lifecycle
from tasks.jobs.message import RUN_JOB, broker_lists, broker_priority

POLICY = LeasePolicy(lease_seconds=1, max_deliveries=1, outbox_grace=1, retention=1)


class Capture:
    """Stands in for kombu's Redis publish batch: kombu builds and routes the message as
    for any publish and hands the final commands here instead of to a pipeline."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


@pytest.fixture
def celery(store_database: str) -> Iterator[Celery]:
    settings = Settings.from_env({"REDIS_URL": store_database})
    app = Celery("dispatch-test", set_as_current=False)
    app.config_from_object(celery_config(settings))
    yield app
    app.close()


def kombus_own(celery: Celery, call: JobCall) -> tuple[str, dict[str, Any]]:
    """What `send_task` would push for the job, as Dispatcher.publish sends it."""
    capture = Capture()
    with celery.producer_or_acquire() as producer:
        producer._batch_local.current = capture
        try:
            celery.send_task(
                RUN_JOB, kwargs={"job_id": call.job_id}, task_id=call.job_id, queue=call.queue,
                priority=broker_priority(call.priority, broker_is_redis=True),
                headers={"x_correlation_id": call.correlation_id},
                soft_time_limit=call.timeout, time_limit=call.timeout + 30, ignore_result=True,
                producer=producer)
        finally:
            del producer._batch_local.current
    [(name, (key, payload))] = capture.commands
    assert name == "lpush"
    return key, json.loads(payload)


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """The message, without what differs between any two publishes (a random tag)."""
    message = json.loads(json.dumps(message))
    message["properties"].pop("delivery_tag")
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


@pytest.mark.parametrize(("queue", "priority", "timeout"), [
    ("chordline", 50, 60), ("chordline.text-to-image.gpu._.1f", 100, 3600),
    ("chordline.echo._.4g", 0, 1)])
def test_a_prepared_message_is_what_kombu_would_push(
        celery: Celery, client: redis.Redis, queue: str, priority: int, timeout: int) -> None:
    dispatcher = Dispatcher(celery, Lifecycle(client, POLICY), "chordline", True,
                            broker_is_store=True)
    call = JobCall("3f2a", queue, priority, timeout, "cid-1")
    prepared = dispatcher.prepare(call)
    assert prepared is not None
    key, expected = kombus_own(celery, call)
    assert prepared.queue_list == key
    assert key in broker_lists(queue)
    ours = comparable(json.loads(prepared.payload))
    assert ours == comparable(expected)
    assert ours["headers"]["x_correlation_id"] == "cid-1"
    assert ours["body"][1] == {"job_id": "3f2a"}


def test_no_message_is_prepared_for_a_broker_elsewhere(celery: Celery,
                                                         client: redis.Redis) -> None:
    dispatcher = Dispatcher(celery, Lifecycle(client, POLICY), "chordline", True,
                            broker_is_store=False)
    assert dispatcher.prepare(JobCall("3f2a", "chordline", 50, 60)) is None
