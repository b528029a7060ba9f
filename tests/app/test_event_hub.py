"""The event hub against a real Redis: the replay seam, reconnects and slow subscribers."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Iterator

import pytest
import redis

from app.embedded_redis import RedisServer
from app.event_hub import EVERYTHING, EventHub, Subscriber
from tasks.core import keys
from tasks.core.events import EventLog
from tasks.jobs.store import JobStore, NewJob
from tests.support import wait_for

_ids = itertools.count()


@pytest.fixture
def hub(client: redis.Redis) -> Iterator[EventHub]:
    hub = EventHub(redis.Redis(connection_pool=client.connection_pool), EventLog(client))
    yield hub
    hub.stop()


class Publisher:
    """Creates jobs (each one `job.queued` event) until stopped."""

    def __init__(self, client: redis.Redis, tenant: str = "t1") -> None:
        self._store = JobStore(client, retention=60)
        self._tenant = tenant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.one()

    def one(self) -> None:
        self._store.create(f"job-{next(_ids)}", NewJob(
            tenant=self._tenant, type="echo", prompt=None, parameters={}, priority=50,
            requirements={}, correlation_id="c", timeout=60), None)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drain(sub: Subscriber) -> list[str]:
    messages = []
    while True:
        try:
            message = sub.outbox.get_nowait()
        except queue.Empty:
            return messages
        assert message is not None
        messages.append(json.loads(message)["id"])


def collect(sub: Subscriber, log_ids: list[str]) -> list[str]:
    """Read `sub` until it has seen the log's last id (or time out)."""
    received: list[str] = []
    wait_for(lambda: (received.extend(drain(sub)) or received[-1:] == log_ids[-1:]), 10)
    return received


def test_a_replay_joins_the_live_events_with_no_gap_and_no_duplicate(
        hub: EventHub, client: redis.Redis) -> None:
    # Given events being written all along
    subscribers = []
    with Publisher(client):
        # When subscribers join at different points, each asking for history
        for _ in range(5):
            wait_for(lambda: client.xlen(keys.EVENT_LOG) > len(subscribers) * 20, 10)
            ids = [entry_id for entry_id, _ in client.xrange(keys.EVENT_LOG)]
            since = ids[len(ids) // 2]
            sub = Subscriber("*", queue_size=100_000)
            hub.follow(sub, EVERYTHING, since)
            subscribers.append((sub, since))
    # Then each got exactly the stored events after its `since`, in order
    log_ids = [entry_id for entry_id, _ in client.xrange(keys.EVENT_LOG)]
    for sub, since in subscribers:
        expected = log_ids[log_ids.index(since) + 1:]
        assert collect(sub, log_ids) == expected


def test_events_missed_while_the_connection_was_down_are_replayed(
        hub: EventHub, client: redis.Redis, redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    sub = Subscriber("*", queue_size=100_000)
    with Publisher(client):
        hub.follow(sub, EVERYTHING, "0")
        for n in range(1, 4):
            wait_for(lambda: client.xlen(keys.EVENT_LOG) > n * 50, 10)  # noqa: B023
            # Redis drops every pub/sub connection (as a restart or a network cut would)
            admin.client_kill_filter(_type="pubsub")
            wait_for(lambda: hub.stats()["reconnects"] == n, 10)  # noqa: B023
    log_ids = [entry_id for entry_id, _ in client.xrange(keys.EVENT_LOG)]
    assert collect(sub, log_ids) == log_ids
    admin.close()


def test_a_live_follower_without_history_starts_at_the_next_event(
        hub: EventHub, client: redis.Redis) -> None:
    publisher = Publisher(client)
    publisher.one()
    sub = Subscriber("*", queue_size=100)
    hub.follow(sub, EVERYTHING)
    publisher.one()
    log_ids = [entry_id for entry_id, _ in client.xrange(keys.EVENT_LOG)]
    assert collect(sub, log_ids) == log_ids[1:]


def test_a_slow_subscriber_is_dropped_and_the_others_go_on(
        hub: EventHub, client: redis.Redis) -> None:
    slow = Subscriber("*", queue_size=5)
    fast = Subscriber("*", queue_size=100)
    hub.follow(slow, EVERYTHING)
    hub.follow(fast, EVERYTHING)
    publisher = Publisher(client)
    received: list[str] = []
    for _ in range(50):
        publisher.one()
        received += drain(fast)
    log_ids = [entry_id for entry_id, _ in client.xrange(keys.EVENT_LOG)]
    received += collect(fast, log_ids) if received[-1:] != log_ids[-1:] else []
    assert received == log_ids
    assert slow.too_slow and hub.stats()["subscribers"] == 1


def test_a_tenant_never_receives_another_tenants_events(
        hub: EventHub, client: redis.Redis) -> None:
    mine = Subscriber("t1", queue_size=100)
    hub.follow(mine, EVERYTHING, "0")
    Publisher(client, "t2").one()
    Publisher(client, "t1").one()
    Publisher(client, "t2").one()
    log = EventLog(client).read(EVERYTHING)
    own = [e["id"] for e in log if e["tenant"] == "t1"]
    assert collect(mine, own) == own
