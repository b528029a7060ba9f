"""The worker entry point: `celery -A workers.bootstrap worker`.

It builds the Flask app (and with it the Celery app and the services) from the
environment, then connects the signal-to-event bridge (workers/signals.py).
"""

from __future__ import annotations

from typing import Any

from celery.signals import after_setup_task_logger

from app import create_app
from tasks.runner import CorrelationFilter
from workers.signals import SignalBridge

flask_app = create_app()
celery = flask_app.extensions["celery"]
SignalBridge(flask_app).connect()


@after_setup_task_logger.connect
def on_after_setup_task_logger(sender: Any = None, logger: Any = None, **extra: Any) -> None:
    for handler in getattr(logger, "handlers", []):
        handler.addFilter(CorrelationFilter())
