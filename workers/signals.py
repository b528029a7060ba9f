"""The signal-to-event bridge: Celery's signals, turned into Chordline's events.

Events about a job are written by the script that changes the job (tasks/*/lua),
so that state and history change in one atomic step; the task's own lifecycle
(publish, prerun, postrun, success, failure, retry) runs those scripts from
inside the task. This module covers what only a signal can see:

- `celeryd_init` names the worker before its pool processes fork, so they can
  say which models their GPU holds; `worker_process_init` starts each pool
  process with none (a replaced process lost its predecessor's models).
- `worker_ready` / `worker_shutdown`: the heartbeat and the webhook courier
  (tasks/webhooks/courier.py) start and stop; the heartbeat's first
  beat announces `worker.online` (and `machine.online`), its goodbye
  `worker.offline`, and any beat announces the workers that stopped beating (a
  SIGKILL fires no signal), with their machines when none of theirs is left.
- `task_received`: the record of a message this worker holds, where kombu's own
  reservation could not carry it (workers/qos.py), so that it comes back
  soon should the worker die holding it.
- `task_revoked`: Celery drops a revoked message (or kills a terminated task)
  without running our code; the job is ended, not left pending for ever.
- `task_unknown` / `task_rejected`: a message this worker cannot run is dropped
  by Celery too; the job fails with the reason.
- `task_prerun`, `task_success`, `task_failure`, `task_retry` and the two above:
  Celery-level outcomes per task name, for /metrics (workers/telemetry.py).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    celeryd_init,
    task_failure,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_revoked,
    task_success,
    task_unknown,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.worker import state as worker_state
from flask import Flask

from tasks.fleet.reservations import instance_name
from tasks.services import Services
from tasks.webhooks.courier import Courier, DeliveryPolicy
from workers.heartbeat import WorkerHeartbeat
from workers.telemetry import TaskCounts

log = logging.getLogger(__name__)


class SignalBridge:
    def __init__(self, flask_app: Flask) -> None:
        self._app = flask_app
        self._heartbeats: list[WorkerHeartbeat] = []
        self._couriers: list[Courier] = []
        self._counts: TaskCounts | None = None
        self.hostname = ""

    @property
    def services(self) -> Services:
        services: Services = self._app.extensions["chordline"]
        return services

    def connect(self) -> None:
        celeryd_init.connect(self.on_celeryd_init, weak=False)
        worker_process_init.connect(self.on_worker_process_init, weak=False)
        worker_ready.connect(self.on_worker_ready, weak=False)
        worker_shutdown.connect(self.on_worker_shutdown, weak=False)
        task_received.connect(self.on_task_received, weak=False)
        task_revoked.connect(self.on_task_revoked, weak=False)
        task_unknown.connect(self.on_task_unknown, weak=False)
        task_rejected.connect(self.on_task_rejected, weak=False)
        for signal, state in ((task_prerun, "started"), (task_success, "succeeded"),
                              (task_failure, "failed"), (task_retry, "retried")):
            signal.connect(self._counter(state), weak=False)
        worker_process_shutdown.connect(self.on_worker_process_shutdown, weak=False)

    @property
    def counts(self) -> TaskCounts:
        if self._counts is None:
            self._counts = TaskCounts(self.services.metrics)
        return self._counts

    def _counter(self, state: str) -> Any:
        def on_signal(sender: Any = None, **_: Any) -> None:
            """Count the task's outcome; telemetry never fails a task."""
            name = getattr(sender, "name", None) or getattr(
                getattr(sender, "task", None), "name", None) or "unknown"
            self.counts.count(str(name), state)

        return on_signal

    def on_worker_process_shutdown(self, **_: Any) -> None:
        self.counts.flush()

    def on_celeryd_init(self, sender: Any = None, **_: Any) -> None:
        self.hostname = str(sender)

    def on_worker_process_init(self, **_: Any) -> None:
        """A new pool process holds no model yet, whatever its predecessor held."""
        if self.services.models is not None:
            self.services.models.clear()

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        """Start the heartbeat and the reaper in the worker's main process."""
        try:
            concurrency = getattr(getattr(sender, "pool", None), "limit", 1) or 1
            assert self.services.node is not None
            heartbeat = WorkerHeartbeat(self.services, self.services.node, sender.hostname,
                                        concurrency, lambda: len(worker_state.active_requests))
            heartbeat.start()
            self._heartbeats.append(heartbeat)
            settings = self.services.settings
            self._couriers.append(Courier(self.services.webhooks,
                                          DeliveryPolicy.from_settings(settings),
                                          settings.webhook_senders).start())
        except Exception:
            log.exception("could not start the worker heartbeat and courier")

    def on_worker_shutdown(self, **_: Any) -> None:
        while self._heartbeats:
            self._heartbeats.pop().stop()
        while self._couriers:
            self._couriers.pop().stop()
        self.counts.flush()

    def on_task_received(self, request: Any = None, **_: Any) -> None:
        """Record the message before it can wait or run, so that it comes back soon if this
        worker dies holding it (tasks/fleet/reservations.py). Only the main process receives."""
        reservations = self.services.reservations
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if reservations is None or reservations.hooked or not tag:
            return  # recorded with kombu's own reservation (workers/qos.py)
        try:
            reservations.record(instance_name(self.hostname), str(tag))
        except Exception:
            log.warning("could not record message %s as held by this worker", tag,
                        exc_info=True)

    def on_task_revoked(self, request: Any = None, terminated: bool = False,
                        expired: bool = False, **_: Any) -> None:
        job_id = getattr(request, "id", None)
        reason = ("terminated" if terminated else "expired" if expired else "revoked")
        self.counts.count(str(getattr(request, "task_name", None) or "unknown"), "revoked")
        self._abandon(job_id, "JOB_REVOKED", f"The task was {reason} in Celery",
                      cancelled=True, running=terminated)

    def on_task_unknown(self, name: str = "", id: str | None = None, **_: Any) -> None:
        self._abandon(id, "UNKNOWN_TASK", f"No worker task is registered as {name!r}",
                      cancelled=False)

    def on_task_rejected(self, message: Any = None, **_: Any) -> None:
        headers = getattr(message, "headers", None) or {}
        self.counts.count(str(headers.get("task") or "unknown"), "rejected")
        self._abandon(headers.get("id"), "MESSAGE_REJECTED",
                      "The worker could not decode the task message", cancelled=False)

    def _abandon(self, job_id: str | None, code: str, message: str, *, cancelled: bool,
                 running: bool = False) -> None:
        if not job_id:
            return
        try:
            outcome = self.services.lifecycle.abandon(job_id, code, message, cancelled=cancelled,
                                                      running=running)
        except Exception:
            log.exception("could not record %s for job %s", code, job_id)
            return
        if outcome.ok:
            log.warning("job %s ended: %s (%s)", job_id, code, message)
