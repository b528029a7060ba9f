"""The messages Chordline sends through Celery: task names, priorities, and their lists.

What a message is called and where it goes is read by the API (to queue a job), the
store's scripts (which push a new job's message themselves), the workers (to consume
it) and the overview (to count what waits): defined once, here, below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_JOB = "chordline.run_job"
RUN_STEP = "chordline.run_step"
JOIN = "chordline.join"
COMPENSATE = "chordline.compensate"
# Undoing a failed workflow (refunds, deletions) goes ahead of new work.
COMPENSATION_PRIORITY = 100
PRIORITY_LEVELS = 10
# On Redis, kombu keeps one list per queue and priority step: `queue`, `queue:1` ... `queue:9`.
PRIORITY_STEPS = range(PRIORITY_LEVELS)
PRIORITY_SEP = ":"
# AMQP's delivery mode for a message that survives a broker restart (kombu's default).
PERSISTENT = 2
# Seconds between the soft time limit (the handler is interrupted and the job
# fails cleanly) and the hard one (the process is killed).
HARD_LIMIT_GRACE = 30


def broker_priority(priority: int, *, broker_is_redis: bool) -> int:
    """Map our 0-100 (higher is more urgent) onto Celery's 0-9.

    Redis serves priority 0 first; RabbitMQ serves the highest number first.
    """
    level = round(priority * (PRIORITY_LEVELS - 1) / 100)
    return (PRIORITY_LEVELS - 1 - level) if broker_is_redis else level


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


@dataclass(frozen=True)
class Prepared:
    """A job's broker message as kombu would push it: the list and the payload."""

    queue_list: str
    payload: str
