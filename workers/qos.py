"""Recording each message a worker reserves in the same Redis transaction as kombu's own
reservation of it (tasks/fleet/reservations.py says why they are recorded at all).

kombu's Redis QoS reserves a delivered message with one MULTI/EXEC pipeline (`unacked`
and its index). A consumer bootstep wraps the worker's QoS so that the pipeline of that
reservation also records the message as held by this worker process: no round trip of
its own, and no moment at which kombu holds a message that nobody knows this worker
held. Should kombu reserve without that pipeline (another version), the message is
recorded with a round trip of its own instead; `task_received` (workers/signals.py)
covers transports without a QoS to wrap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from celery import Celery, bootsteps

from tasks.fleet.reservations import Reservations, instance_name


class ReservingQoS:
    """Wraps one kombu Redis QoS: `append` (a reservation) also records the message."""

    def __init__(self, qos: Any, reservations: Reservations, hostname: str) -> None:
        self._reservations = reservations
        self._instance = instance_name(hostname)
        self._append: Callable[[Any, str], None] = qos.append
        self._pipe_or_acquire: Callable[..., AbstractContextManager[Any]] = qos.pipe_or_acquire
        self._pending = threading.local()
        qos.append = self.append
        qos.pipe_or_acquire = self.pipe_or_acquire

    def append(self, message: Any, delivery_tag: str) -> None:
        self._pending.tag = delivery_tag
        try:
            self._append(message, delivery_tag)
        finally:
            unrecorded, self._pending.tag = self._pending.tag, None
        if unrecorded is not None:  # kombu reserved it without a pipeline of ours
            self._reservations.record(self._instance, str(unrecorded))

    @contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        with self._pipe_or_acquire(pipe, client) as pipeline:
            tag = getattr(self._pending, "tag", None)
            if tag is not None:
                self._pending.tag = None
                self._reservations.stage(pipeline, self._instance, str(tag))
            yield pipeline


class ReservationStep(bootsteps.StartStopStep):
    """Wraps the task consumer's QoS, each time the consumer (re)connects."""

    requires = frozenset({"celery.worker.consumer.tasks:Tasks"})
    reservations: Reservations | None = None

    def start(self, c: Any) -> None:
        qos = getattr(getattr(c.task_consumer, "channel", None), "qos", None)
        if self.reservations is None or not hasattr(qos, "pipe_or_acquire"):
            return
        ReservingQoS(qos, self.reservations, c.hostname)
        self.reservations.hooked = True


def install(celery: Celery, reservations: Reservations | None) -> None:
    """Record reservations in kombu's pipeline (called once, by workers/bootstrap.py)."""
    ReservationStep.reservations = reservations
    celery.steps["consumer"].add(ReservationStep)
