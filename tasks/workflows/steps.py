"""Workflow steps: the `chordline.run_step` task and the `chordline.join` barrier.

The canvas only orders the steps; results pass through the job store. A step's
task never fails in Celery's eyes: it records its own outcome, then either
returns (the canvas goes on: the next steps see the outcome and run, skip or
stand down) or raises `Ignore` when another message carries the step on (a
duplicate delivery, a retry, an early delivery parked until its dependencies
finish). Celery's chord error paths, unreliable on the Redis backend, are never
taken, and a duplicate never counts towards a chord.
"""

from __future__ import annotations

import json

from celery import Task, shared_task
from celery.exceptions import Ignore

from tasks.jobs.message import JOIN, RUN_STEP
from tasks.jobs.runner import run_in_task

# Outcomes after which the step is settled and the canvas may go on.
SETTLED = frozenset({"completed", "failed", "skipped", "skip", "missing", "poisoned",
                     "conflict", "stopped", "cancelled"})


@shared_task(name=RUN_STEP, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def run_step(self: Task, job_id: str) -> None:
    """Run one step; return only once it is settled, so the canvas never runs ahead."""
    envelope = json.dumps(self.signature_from_request())
    outcome = run_in_task(self, job_id, envelope)
    if outcome not in SETTLED:
        raise Ignore()


@shared_task(name=JOIN, ignore_result=True)
def join() -> None:
    """Nothing: the chord body that joins one group of steps before the next group."""
