"""Live events for one API process: one Redis pub/sub connection shared by every socket.

Pub/sub is at most once, so the hub never trusts it alone. A subscription that
asks for history (`since`) is registered first, so live events start to collect
in its backlog, and only then is the stored history read; the backlog is then
drained past the last replayed id: no gap and no duplicate at the seam. After the
pub/sub connection drops, every subscription is caught up from the stored events
the same way. Event ids are the global log's stream ids, so they compare in order.

A subscriber's queue is bounded and the hub never blocks on it: a socket too
slow to keep up is marked and dropped, and the others go on.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.errors import Unavailable
from tasks.core.events import EVERYTHING, EventLog, Feed, parse_id

log = logging.getLogger(__name__)

# ("job", id), ("workflow", id) or ("all", "*"): a feed of tasks/core/events.py.
Topic = Feed
EventId = tuple[int, int]
# How long a replay may wait for its socket to drain before the socket counts as too slow.
REPLAY_PATIENCE_S = 10.0


class HubUnavailable(Unavailable):
    """The pub/sub connection could not be established."""

    default_code = "EVENTS_UNAVAILABLE"


@dataclass
class Cursor:
    """Where one subscription stands: the last id it was given, and the live
    events held back while its history is replayed (None once live)."""

    last: EventId | None = None
    backlog: list[tuple[EventId, str]] | None = None


@dataclass(eq=False)
class Subscriber:
    """One socket's mailbox: the topics it follows and its bounded queue of messages."""

    tenant: str
    queue_size: int
    outbox: queue.Queue[str | None] = field(init=False)
    topics: dict[Topic, Cursor] = field(default_factory=dict)
    too_slow: bool = False

    def __post_init__(self) -> None:
        self.outbox = queue.Queue(self.queue_size)

    def offer(self, message: str, wait: float = 0.0) -> bool:
        """Queue a message; a full queue (after `wait` seconds) marks the socket too slow."""
        if self.too_slow:
            return False
        try:
            self.outbox.put(message, block=wait > 0, timeout=wait or None)
        except queue.Full:
            self.too_slow = True
            return False
        return True

    def may_see(self, event: dict[str, Any]) -> bool:
        return self.tenant == keys.ALL_TENANTS or event.get("tenant") == self.tenant


class EventHub:
    def __init__(self, client: redis.Redis, events: EventLog, *,
                 connect_timeout: float = 5.0) -> None:
        self._client = client
        self._events = events
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._followers: dict[Topic, set[Subscriber]] = defaultdict(set)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.reconnects = 0

    # -- subscriptions -------------------------------------------------------

    def follow(self, sub: Subscriber, topic: Topic, since: str | None = None) -> None:
        """Deliver `topic`'s events to `sub`: with `since`, the stored ones after it first."""
        cursor = Cursor(backlog=[] if since is not None else None)
        with self._lock:
            sub.topics[topic] = cursor
            self._followers[topic].add(sub)
        self.start()
        if since is not None:
            self._replay(sub, topic, cursor, since, REPLAY_PATIENCE_S)

    def unfollow(self, sub: Subscriber, topic: Topic) -> bool:
        with self._lock:
            if sub.topics.pop(topic, None) is None:
                return False
            self._drop(sub, topic)
            return True

    def detach(self, sub: Subscriber) -> None:
        with self._lock:
            for topic in list(sub.topics):
                self._drop(sub, topic)
            sub.topics.clear()

    def _drop(self, sub: Subscriber, topic: Topic) -> None:
        followers = self._followers.get(topic)
        if followers is not None:
            followers.discard(sub)
            if not followers:
                del self._followers[topic]

    def _replay(self, sub: Subscriber, topic: Topic, cursor: Cursor, since: str,
                patience: float) -> None:
        """Send the stored events after `since`, then the live ones held back meanwhile.

        A socket's own reader replays with `patience` (its writer drains meanwhile);
        the hub's catch-up must not wait on any one socket.
        """
        last = parse_id(since)
        for event in self._events.read_all(topic, since):
            if sub.may_see(event) and not sub.offer(json.dumps(event), patience):
                break
            last = parse_id(event["id"])
        with self._lock:
            backlog, cursor.backlog, cursor.last = cursor.backlog or [], None, last
            for event_id, message in backlog:
                if event_id > last:
                    cursor.last = event_id
                    sub.offer(message)
        if sub.too_slow:
            self.detach(sub)

    # -- the pub/sub connection ---------------------------------------------

    def start(self) -> None:
        """Start listening (once per process); returns when the channel is subscribed."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chordline-event-hub",
                                                daemon=True)
                self._thread.start()
        if not self._ready.wait(self._connect_timeout):
            raise HubUnavailable("could not subscribe to live events in Redis")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def _run(self) -> None:
        lost_at: int | None = None
        while not self._stopping.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self._events.channel)
                self._await_subscription(pubsub)
                self._ready.set()
                if lost_at is not None:
                    log.info("live events reconnected; catching up from the stored events")
                    self._catch_up(lost_at)
                    self.reconnects += 1
                    lost_at = None
                self._listen(pubsub)
            except (redis.RedisError, OSError):
                if self._ready.is_set():
                    log.warning("live events connection lost; reconnecting")
                    lost_at = now_ms()
                self._ready.clear()
                self._stopping.wait(0.5)
            finally:
                pubsub.close()

    def _await_subscription(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + self._connect_timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "subscribe":
                return
        raise redis.ConnectionError("no subscribe confirmation")

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message and message["type"] == "message":
                self.route(message["data"])

    def route(self, message: str) -> None:
        """Hand one published event to every subscriber that follows what it concerns."""
        event = json.loads(message)
        event_id = parse_id(event["id"])
        topics = [EVERYTHING]
        for kind in ("job", "workflow"):
            if ident := event.get(f"{kind}_id"):
                topics.append((kind, ident))
        slow: list[Subscriber] = []
        with self._lock:
            targets: dict[Subscriber, list[Cursor]] = {}
            for topic in topics:
                for sub in self._followers.get(topic, ()):
                    targets.setdefault(sub, []).append(sub.topics[topic])
            for sub, cursors in targets.items():
                if sub.may_see(event) and self._advance(sub, cursors, event_id, message):
                    self.delivered += 1
                    if not sub.offer(message):
                        slow.append(sub)
            for sub in slow:
                for topic in list(sub.topics):
                    self._drop(sub, topic)

    @staticmethod
    def _advance(sub: Subscriber, cursors: list[Cursor], event_id: EventId,
                 message: str) -> bool:
        """Whether the event is new to a live cursor (replaying ones keep it for later)."""
        fresh = False
        for cursor in cursors:
            if cursor.backlog is not None:
                if len(cursor.backlog) >= sub.queue_size:
                    sub.too_slow = True
                cursor.backlog.append((event_id, message))
            elif cursor.last is None or event_id > cursor.last:
                cursor.last = event_id
                fresh = True
        return fresh

    def _catch_up(self, lost_at: int) -> None:
        """Replay what each subscription missed while the connection was down."""
        with self._lock:
            pending = [(sub, topic, cursor) for sub in self._subscribers()
                       for topic, cursor in sub.topics.items() if cursor.backlog is None]
            for _sub, _topic, cursor in pending:
                cursor.backlog = []
        for sub, topic, cursor in pending:
            # A cursor that never saw an event resumes from shortly before the loss
            # (a margin for clock skew between this host and Redis).
            since = (f"{cursor.last[0]}-{cursor.last[1]}" if cursor.last
                     else f"{max(lost_at - 5000, 0)}-0")
            self._replay(sub, topic, cursor, since, 0.0)

    def _subscribers(self) -> set[Subscriber]:
        return {sub for subs in self._followers.values() for sub in subs}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"subscribers": len(self._subscribers()), "topics": len(self._followers),
                    "delivered": self.delivered, "reconnects": self.reconnects}

