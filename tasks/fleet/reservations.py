"""The broker messages a worker holds unacknowledged, given back soon after it dies.

On Redis, kombu moves each message it delivers into its `unacked` hash and takes it
out when the worker acknowledges it, which with `acks_late` is after the task, its
outcome and its canvas continuation. Only the visibility timeout (hours here, far
above the longest step: celery#5935) brings back what a SIGKILLed worker held. The
job's lease covers the run itself, but two windows lie outside it:

- a message reserved and not yet claimed (prefetched, waiting for its ETA, or between
  the pool's fork and the claim), and
- a workflow step whose outcome is recorded but whose continuation Celery has not yet
  published.

Both end with the ack, so both are closed here. Each worker process records the
delivery tag of every message it receives, in the transaction kombu reserves it with
(workers/qos.py), and its heartbeat forgets the tags it has acknowledged
since. A worker process that stopped beating (or whose hostname now beats from another
start: a supervisor or a container restarted it, maybe with the same pid) has its
messages pushed back to the front of their queues by any live worker's reaper, one
Lua script a message, each with a delivery tag of its own. A message is restored only
while the dead process still held it: the script checks kombu's own entry and the
time it was reserved, so two reapers, or a message already restored and taken by
another worker, never give two copies. A restored message is at worst a duplicate delivery,
which the claim drops (tasks/jobs/lua/claim.lua).

RabbitMQ needs none of this: it requeues a closed connection's unacknowledged
messages at once.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import redis
from celery import Celery

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.scripts import Scripts

log = logging.getLogger(__name__)


def _new_boot() -> None:
    global _BOOT
    _BOOT = uuid.uuid4().hex[:16]


_BOOT = ""
_new_boot()
os.register_at_fork(after_in_child=_new_boot)


def boot_id() -> str:
    """This process's start, told apart from any other: a restarted worker keeps its
    hostname, and in a container its pid too (pid 1 again)."""
    return _BOOT


def instance_name(hostname: str, boot: str | None = None) -> str:
    """One worker process: its hostname and its start."""
    return f"{hostname}|{boot_id() if boot is None else boot}"


class Reservations:
    """One worker process's reservations, and every dead process's, on the broker's Redis."""

    def __init__(self, broker: redis.Redis, celery: Celery) -> None:
        self._redis = broker
        self._scripts = Scripts(broker)
        self._celery = celery
        # A worker records its reservations in kombu's own pipeline (workers/qos.py).
        self.hooked = False

    def record(self, instance: str, delivery_tag: str) -> None:
        """The worker received a message (before it runs, waits or is claimed)."""
        pipe = self._redis.pipeline(transaction=False)
        self.stage(pipe, instance, delivery_tag)
        pipe.execute()

    def stage(self, pipe: Any, instance: str, delivery_tag: str) -> None:
        """Queue the record of a reservation on a pipeline (kombu's, or ours)."""
        pipe.hset(keys.reservations(instance), delivery_tag, now_ms())
        pipe.sadd(keys.RESERVERS, instance)

    def prune(self, instance: str) -> int:
        """Forget what was acknowledged since; returns how many messages are held."""
        unacked, _index = self._kombu_keys()
        return int(self._scripts.reservation_prune(
            keys=[keys.reservations(instance), unacked, keys.RESERVERS], args=[instance]))

    def forget(self, instance: str) -> None:
        """A worker that shuts down gives its messages back itself (kombu, on close)."""
        self._scripts.reservation_forget(
            keys=[keys.reservations(instance), keys.RESERVERS], args=[instance, ""])

    def orphans(self, live: dict[str, str | None]) -> list[str]:
        """Worker processes holding messages that no longer beat: their hostname is not
        among `live` (hostname -> the boot id it beats with), or beats from another start."""
        dead = []
        for instance in sorted(str(i) for i in self._redis.smembers(keys.RESERVERS)):
            hostname, _, boot = instance.rpartition("|")
            if live.get(hostname, "") != boot:
                dead.append(instance)
        return dead

    def restore(self, instance: str, cutoff_ms: int) -> int:
        """Push a dead process's messages, received before `cutoff_ms`, back to their
        queues; returns how many went back. A message that cannot be restored (a
        malformed entry) is logged and left, never in the way of the others."""
        held = self._redis.hgetall(keys.reservations(instance))
        restored = failed = 0
        with self._celery.connection_for_write() as connection:
            channel = connection.default_channel
            for tag, received in held.items():
                if int(received) > cutoff_ms:
                    continue
                try:
                    restored += self._restore_one(channel, instance, str(tag), int(received))
                except Exception:
                    failed += 1
                    log.exception("could not give message %s of dead worker %s back",
                                  tag, instance)
        if not failed:
            self._scripts.reservation_forget(
                keys=[keys.reservations(instance), keys.RESERVERS], args=[instance, cutoff_ms])
        if restored:
            log.warning("gave %d message(s) of dead worker %s back to their queues",
                        restored, instance)
        return restored

    def restore_dead(self, live: dict[str, str | None], cutoff_ms: int) -> int:
        """Every dead process's messages; one that fails is logged, and tried next tick."""
        restored = 0
        for instance in self.orphans(live):
            try:
                restored += self.restore(instance, cutoff_ms)
            except Exception:
                log.exception("could not restore the messages of dead worker %s", instance)
        return restored

    def _restore_one(self, channel: Any, instance: str, tag: str, received_ms: int) -> int:
        unacked, index = self._kombu_keys()
        entry = self._redis.hget(unacked, tag)
        if entry is None:  # acknowledged since its worker's last beat
            self._redis.hdel(keys.reservations(instance), tag)
            return 0
        payload, exchange, routing_key = json.loads(entry)
        queues = self._destinations(channel, payload, exchange, routing_key)
        _mark_redelivered(payload)
        # A tag of its own: should the process taken for dead still ack the old one, kombu
        # would otherwise drop the entry of the worker that took the message over.
        payload["properties"]["delivery_tag"] = str(uuid.uuid4())
        if not queues:
            log.error("message %s of dead worker %s has no queue to go back to", tag, instance)
            return 0
        # A task's exchange is direct, bound to its one queue.
        return int(self._scripts.reservation_restore(
            keys=[keys.reservations(instance), unacked, index, queues[0]],
            args=[tag, entry, json.dumps(payload), received_ms]))

    @staticmethod
    def _destinations(channel: Any, payload: dict[str, Any], exchange: str,
                      routing_key: str) -> list[str]:
        """The lists a message goes back to, found by kombu's own routing (its bindings
        and priority steps), as its restore finds them."""
        priority = channel._get_message_priority(payload, reverse=False)
        return [channel._q_for_pri(queue, priority)
                for queue in channel._lookup(exchange, routing_key)]

    def _kombu_keys(self) -> tuple[str, str]:
        options = self._celery.conf.broker_transport_options or {}
        return (options.get("unacked_key", "unacked"),
                options.get("unacked_index_key", "unacked_index"))


def _mark_redelivered(payload: dict[str, Any]) -> None:
    """As kombu marks the messages it restores."""
    payload.get("headers", {})["redelivered"] = True
    payload.get("properties", {}).get("delivery_info", {})["redelivered"] = True

