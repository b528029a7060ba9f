"""The Celery app, built from the same Settings as the Flask app ("Celery with Flask")."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Queue

from tasks.core.settings import Settings
from tasks.jobs.message import HARD_LIMIT_GRACE, PRIORITY_SEP, PRIORITY_STEPS, broker_priority

TASK_MODULES = ["tasks.jobs.runner", "tasks.workflows.steps",
                "tasks.workflows.compensation"]
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s] "
    "cid=%(correlation_id)s: %(message)s"
)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings for long GPU tasks on an at-least-once broker."""
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": min(settings.redis_timeout, 2.0),
    }
    if settings.broker_is_redis:
        # An idle worker's read of its queues (BRPOP) lasts this long: a queue it starts to
        # consume (a new route, a resume) is read at the latest this much later.
        transport |= {"queue_order_strategy": "priority", "priority_steps": list(PRIORITY_STEPS),
                      "sep": PRIORITY_SEP, "polling_interval": 0.25}
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.redis_url,
        "include": TASK_MODULES,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_queues": [Queue(settings.queue, queue_arguments={"x-max-priority": 10})],
        "task_queue_max_priority": 10,
        "task_default_priority": broker_priority(50, broker_is_redis=settings.broker_is_redis),
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_expires": settings.result_expires,
        "task_soft_time_limit": settings.max_job_timeout,
        "task_time_limit": settings.max_job_timeout + HARD_LIMIT_GRACE,
        # Celery's own task events (three PUBLISHes a job, one more a submit) feed only
        # Flower, which turns them on while it runs (its --enable-events, the default):
        # Chordline's events come from its scripts (tasks/*/lua).
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # The API answers 503 quickly instead of hanging while the broker is away.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0,
                                      "interval_step": 0.2, "interval_max": 0.5},
        "worker_task_log_format": TASK_LOG_FORMAT,
    }


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """Create the Celery app whose tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(celery_config(settings))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery
