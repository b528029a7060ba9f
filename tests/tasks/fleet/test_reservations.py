"""Reservations on a real Redis, with kombu's own unacked bookkeeping: a dead worker's
messages go back once, and only while it still held them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Connection, Queue

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.scripts import Scripts
from tasks.fleet.reservations import Reservations

QUEUE = "reservations-test"


@pytest.fixture
def celery(store_database: str) -> Iterator[Celery]:
    app = Celery("reservations-test", broker=store_database, set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def reservations(client: redis.Redis, celery: Celery) -> Reservations:
    return Reservations(client, celery)


def reserve(celery: Celery, body: str) -> str:
    """Publish a message and take it unacknowledged, as a worker's consumer does; returns
    its delivery tag (the connection is dropped without a goodbye, like a SIGKILL)."""
    connection: Connection = celery.connection_for_write()
    queue = Queue(QUEUE)
    with connection.Producer() as producer:
        producer.publish(body, routing_key=QUEUE, declare=[queue], priority=0)
    message = connection.SimpleQueue(queue, no_ack=False).get(timeout=2)
    tag = str(message.delivery_tag)
    connection.default_channel.qos._delivered.clear()  # no restore when we let go
    return tag


def waiting(client: redis.Redis) -> list[str]:
    """The bodies of the messages in the queue (kombu's Redis transport keeps them base64)."""
    return [base64.b64decode(json.loads(m)["body"]).decode()
            for m in client.lrange(QUEUE, 0, -1)]


def test_a_dead_workers_message_goes_back_to_its_queue_once(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    # Given a message held by a worker process that then died
    tag = reserve(celery, "job-1")
    reservations.record("w1|100", tag)
    assert client.llen(QUEUE) == 0 and client.hexists("unacked", tag)
    # When two reapers restore it
    assert reservations.restore_dead({}, now_ms()) == 1
    assert reservations.restore_dead({}, now_ms()) == 0
    # Then it waits in its queue once, marked redelivered, and nothing holds it
    assert len(waiting(client)) == 1
    assert json.loads(client.lindex(QUEUE, 0) or "")["headers"]["redelivered"] is True
    assert not client.hexists("unacked", tag)
    assert not client.exists(keys.reservations("w1|100"))
    assert not client.sismember(keys.RESERVERS, "w1|100")


def test_a_live_workers_messages_stay_and_acked_ones_are_forgotten(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    held, acked = reserve(celery, "held"), reserve(celery, "acked")
    for tag in (held, acked):
        reservations.record("w1|100", tag)
    client.hdel("unacked", acked)  # the ack
    # A live process (same pid) keeps its messages; its beat forgets the acked one
    assert reservations.restore_dead({"w1": "100"}, now_ms()) == 0
    assert reservations.prune("w1|100") == 1
    assert client.hkeys(keys.reservations("w1|100")) == [held]
    # The same hostname beating from another start (a restarted worker, in a container
    # with the same pid): the old process's messages go back, with a tag of their own
    assert reservations.restore_dead({"w1": "200"}, now_ms()) == 1
    assert waiting(client) == ["held"]
    restored = json.loads(client.lindex(QUEUE, 0) or "")
    assert restored["properties"]["delivery_tag"] != held


def test_a_message_restored_and_taken_by_another_worker_is_not_restored_again(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    # Given a message the dead worker held, restored by kombu itself (the visibility
    # timeout) and reserved again by another worker
    tag = reserve(celery, "job-1")
    reservations.record("w1|100", tag)
    client.zadd("unacked_index", {tag: now_ms() / 1000 + 5})  # reserved again, later
    # Then the dead worker's record does not push a second copy
    assert reservations.restore_dead({}, now_ms()) == 0
    assert client.llen(QUEUE) == 0 and client.hexists("unacked", tag)


def test_a_process_not_yet_beating_keeps_its_young_messages(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    tag = reserve(celery, "job-1")
    reservations.record("w2|300", tag)
    # Received after the liveness cutoff: the process may only be starting
    assert reservations.restore_dead({}, now_ms() - 10_000) == 0
    assert client.hexists(keys.reservations("w2|300"), tag)
    assert client.sismember(keys.RESERVERS, "w2|300")


def test_a_stale_read_never_restores_a_message_twice(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    # Given two reapers that both read the dead worker's entry, and one restores it
    tag = reserve(celery, "job-1")
    reservations.record("w1|100", tag)
    stale = client.hget("unacked", tag)
    assert reservations.restore_dead({}, now_ms()) == 1
    # When the other pushes what it read
    again = Scripts(client).reservation_restore(
        keys=[keys.reservations("w1|100"), "unacked", "unacked_index", QUEUE],
        args=[tag, stale, "copy", now_ms()])
    # Then nothing moves: the entry it read is gone
    assert again == 0 and client.llen(QUEUE) == 1


def test_a_changed_entry_is_left_to_whoever_changed_it(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    tag = reserve(celery, "job-1")
    reservations.record("w1|100", tag)
    entry = client.hget("unacked", tag)
    assert entry is not None
    Scripts(client).reservation_restore(
        keys=[keys.reservations("w1|100"), "unacked", "unacked_index", QUEUE],
        args=[tag, entry + " ", "copy", now_ms()])  # not what kombu holds now
    assert client.llen(QUEUE) == 0 and client.hget("unacked", tag) == entry


def test_a_malformed_entry_does_not_hold_up_the_others(
        client: redis.Redis, celery: Celery, reservations: Reservations) -> None:
    good = reserve(celery, "good")
    for tag in ("broken", good):
        reservations.record("w1|100", tag)
    client.hset("unacked", "broken", "not json")
    assert reservations.restore_dead({}, now_ms()) == 1
    assert waiting(client) == ["good"]
    # The broken one stays recorded, for an operator (or kombu's visibility timeout)
    assert client.hexists(keys.reservations("w1|100"), "broken")
