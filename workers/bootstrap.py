"""The worker entry point: `celery -A workers.bootstrap worker`.

It builds the Flask app (and with it the Celery app and the services) from the
environment, then hooks the heartbeat to the worker's lifecycle signals.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import after_setup_task_logger, worker_ready, worker_shutdown

from app import create_app
from tasks.runner import CorrelationFilter
from tasks.services import current_services
from workers.heartbeat import WorkerHeartbeat

flask_app = create_app()
celery = flask_app.extensions["celery"]
log = logging.getLogger(__name__)
_heartbeats: list[WorkerHeartbeat] = []


@worker_ready.connect
def on_worker_ready(sender: Any = None, **extra: Any) -> None:
    """Start the heartbeat and the reaper in the worker's main process."""
    try:
        with flask_app.app_context():
            services = current_services()
        concurrency = getattr(getattr(sender, "pool", None), "limit", 1) or 1
        heartbeat = WorkerHeartbeat(services, sender.hostname, concurrency)
        heartbeat.start()
        _heartbeats.append(heartbeat)
    except Exception:
        log.exception("could not start the worker heartbeat")


@worker_shutdown.connect
def on_worker_shutdown(sender: Any = None, **extra: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()


@after_setup_task_logger.connect
def on_after_setup_task_logger(sender: Any = None, logger: Any = None, **extra: Any) -> None:
    for handler in getattr(logger, "handlers", []):
        handler.addFilter(CorrelationFilter())
