"""Places where a test worker stops dead, so that a test can SIGKILL it exactly there
(a test plugin, loaded with CHORDLINE_HANDLER_MODULES).

A test arms a point by setting its key; the first job to reach it takes the key
(GETDEL: one job, once, so the worker that takes over runs through), names itself in
`paused:<point>` and sleeps until it is killed.

- `before_claim`: the message is received and handed to the pool, the job not yet
  claimed (`task_prerun`, before the task's body).
- `after_outcome`: the job's outcome is recorded, its canvas continuation not yet
  published (after `Lifecycle.complete`, before Celery applies the chain).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery.signals import task_prerun, worker_process_init

from tasks.handlers.registry import HandlerRegistry
from tasks.jobs.lifecycle import Lifecycle, Transition

POINTS = ("before_claim", "after_outcome")


def armed(point: str) -> str:
    return f"test:pause:{point}"


def paused(point: str) -> str:
    return f"test:paused:{point}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


def _stop_here(point: str, job_id: str) -> None:
    client = _client()
    if client.getdel(armed(point)) is None:
        return
    client.set(paused(point), job_id)
    time.sleep(3600)


def _before_claim(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _stop_here("before_claim", task_id)


_complete = Lifecycle.complete


def _complete_then_stop(self: Lifecycle, job_id: str, token: str,
                        result: dict[str, Any]) -> Transition:
    outcome = _complete(self, job_id, token, result)
    _stop_here("after_outcome", job_id)
    return outcome


def _install(**_: Any) -> None:
    task_prerun.connect(_before_claim, weak=False)
    Lifecycle.complete = _complete_then_stop  # type: ignore[method-assign]


def register(registry: HandlerRegistry) -> None:
    """Install the pause points in a worker's pool processes only (the registry is left
    as it is): a test process that builds the same app must run unpatched."""
    worker_process_init.connect(_install, weak=False)
