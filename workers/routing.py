"""Route consumption: each worker pulls from exactly the queues placement orders for it.

A Celery consumer bootstep. On start, after every job a GPU worker finishes
(before the message is acknowledged, so before the broker can hand it the next
one), every `CHORDLINE_ROUTING_INTERVAL` while idle, and at once when an API
process publishes to a route new to it (the `chordline_refresh_routes` control
command), the worker reads the routes and the fleet and consumes the queues
tasks/fleet/placement.py orders for its slot, with Celery's own
`add_task_queue`/`cancel_task_queue`. The base queue (joins, compensations)
comes first. A draining machine's workers consume nothing.

Messages stay in the broker until a fitting worker takes them, so acks_late,
leases, the reaper and the outboxes hold on every route exactly as on one queue.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from typing import Any

import redis
from celery import Celery, bootsteps
from celery.worker import state as worker_state
from celery.worker.control import control_command
from celery.worker.request import Request

from tasks.core.clock import now_ms
from tasks.fleet.machines import OwnState
from tasks.fleet.offers import Offer, Route
from tasks.fleet.placement import Estimates, Slot, pull_order
from tasks.fleet.profile import NodeProfile
from tasks.fleet.refresh import REFRESH_ROUTES
from tasks.jobs.message import RUN_JOB, RUN_STEP
from tasks.services import Services

log = logging.getLogger(__name__)

# This process's routing, once its consumer started (one consumer per worker process).
_current: QueueRouting | None = None


class QueueRouting:
    """Keeps one consumer on the queues its slot should pull from, in order."""

    def __init__(self, consumer: Any, services: Services, profile: NodeProfile) -> None:
        self._consumer = consumer
        self._s = services
        self._profile = profile
        self._hostname: str = consumer.hostname
        self._own = OwnState()
        # Only a GPU slot's order depends on the jobs it runs (the models it holds).
        self.after_each_job = profile.gpu is not None

    def refresh(self) -> None:
        """Consume what placement says now; on a Redis error keep what we have."""
        try:
            desired = self._desired()
        except redis.RedisError:
            log.warning("could not read the routes; consuming as before", exc_info=True)
            return
        self._apply(desired)

    def tick(self) -> None:
        """The idle timer: a busy GPU slot looks again when its job ends."""
        if not (self.after_each_job and worker_state.active_requests):
            self.refresh()

    def _desired(self) -> list[str]:
        if self.after_each_job:  # fresh: what its pool process holds changes with every job
            self._own = self._s.machines.own_state(self._hostname, self._profile.machine_id)
            self._withdraw(self._own.broken)
            operator_labels, draining = self._own.operator_labels, self._own.draining
        else:
            operator_labels, draining = self._s.machines.operator_state(
                self._profile.machine_id)
        if draining:
            return []
        offer = replace(self._profile.offer(),
                        labels={**self._profile.labels, **operator_labels})
        if not self.after_each_job:
            # A CPU worker loads nothing: every route is free, and its transport takes
            # them in turns (round robin), so none starves another.
            return [self._s.settings.queue,
                    *sorted(q for q, r in self._s.routes.registered().items()
                            if offer.accepts(r))]
        registered, estimates = self._s.routes.registered_and_estimates()
        routes = {q: r for q, r in registered.items() if offer.accepts(r)}
        return [self._s.settings.queue, *self._order(offer, routes, estimates)]

    def _withdraw(self, broken: dict[str, str]) -> None:
        """Models that failed to load here leave this node's offer (and its record)."""
        catalog = self._profile.catalog
        for name, reason in broken.items():
            model = catalog.models.get(name)
            if model is not None and not model.unavailable:
                catalog.mark_unavailable(name, reason)
                log.error("model %s withdrawn from this node: %s", name, reason)

    def take_fresh_process(self) -> int | None:
        """The pool process that asked to be replaced (its GPU memory did not come back)."""
        pid, self._own = self._own.fresh_process, replace(self._own, fresh_process=None)
        if pid is not None:
            self._s.machines.forget_fresh_process(self._hostname)
        return pid

    def replace_pool_process(self, pid: int) -> None:
        """Stop an idle pool process; the pool starts a fresh one (a new CUDA context)."""
        if pid in (self._consumer.pool.info or {}).get("processes", []):
            log.warning("replacing pool process %d: its GPU memory did not come back", pid)
            os.kill(pid, signal.SIGTERM)

    def _order(self, offer: Offer, routes: dict[str, Route], estimates: Estimates) -> list[str]:
        """A GPU slot's pull order, from the fleet as last read (at most a routing interval
        old) with its own models fresh."""
        own = self._own.models
        fleet = [replace(s, models=own) if s.hostname == self._hostname else s
                 for s in self._s.machines.slots(max_age=self._s.settings.routing_interval)]
        me = Slot(self._hostname, offer, own, busy=bool(worker_state.active_requests))
        return pull_order(me, self._s.routes.waiting(routes), fleet, estimates, now_ms(),
                          self._s.settings.routing_max_wait)

    def _apply(self, desired: list[str]) -> None:
        current = [q.name for q in self._consumer.task_consumer.queues]
        if self.after_each_job:  # the order is the preference: redo it from the first change
            keep = next((i for i, (a, b) in enumerate(zip(current, desired, strict=False))
                         if a != b), min(len(current), len(desired)))
            stale, fresh = current[keep:], desired[keep:]
        else:  # the transport takes turns: only which queues matters
            stale = [q for q in current if q not in desired]
            fresh = [q for q in desired if q not in current]
        if not stale and not fresh:
            return
        queues = self._consumer.app.amqp.queues
        for name in stale:
            self._consumer.cancel_task_queue(name)
        for name in fresh:
            queues[name]  # declared as the publisher does it (priorities included)
            self._consumer.add_task_queue(name)
        log.info("pulling from %s", ", ".join(desired) or "nothing (draining)")


class RoutingStep(bootsteps.StartStopStep):
    """Starts a worker's route consumption once its task consumer exists."""

    requires = frozenset({"celery.worker.consumer.tasks:Tasks"})
    services: Services | None = None
    profile: NodeProfile | None = None

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        global _current
        assert self.services is not None and self.profile is not None
        _current = c.chordline_routing = QueueRouting(c, self.services, self.profile)
        # The first look runs in the event loop, once the consumer has its message
        # callback: RabbitMQ delivers a route queue's waiting messages the moment it is
        # consumed, and before then kombu's consumer has nowhere to hand them (a crash).
        c.timer.call_after(0, _current.refresh)
        self._timer = c.timer.call_repeatedly(self.services.settings.routing_interval,
                                              _current.tick)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()


class RoutedRequest(Request):
    """A job's request: its GPU slot looks at the routes again before the message is
    acknowledged, so the next one it pulls is chosen with the models it now holds, and
    replaces a pool process that asked for it while it is idle."""

    def acknowledge(self) -> None:
        stale = None
        if _current is not None and _current.after_each_job:
            _current.refresh()
            stale = _current.take_fresh_process()
        super().acknowledge()
        if stale is not None and _current is not None:
            _current.replace_pool_process(stale)


@control_command(name=REFRESH_ROUTES)
def chordline_refresh_routes(state: Any, **_: Any) -> dict[str, str]:
    """Look at the routes again now (a route is new, or a machine drained or resumed)."""
    routing = getattr(state.consumer, "chordline_routing", None)
    if routing is not None:
        routing.refresh()
    return {"ok": "refreshed"}


def install(celery: Celery, services: Services, profile: NodeProfile) -> None:
    """Route this worker's consumption (called once, by workers/bootstrap.py)."""
    import tasks.jobs.runner
    import tasks.workflows.steps  # noqa: F401 - registers the tasks whose requests change here

    RoutingStep.services, RoutingStep.profile = services, profile
    celery.steps["consumer"].add(RoutingStep)
    for name in (RUN_JOB, RUN_STEP):
        celery.tasks[name].Request = "workers.routing:RoutedRequest"
