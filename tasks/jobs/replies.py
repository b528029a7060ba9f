"""What the job scripts answer (tasks/jobs/lua/): one enum per script, as Celery's states.

The scripts return these words; Python compares them only as these members, never
as strings of its own.
"""

from __future__ import annotations

from enum import StrEnum


class TransitionReply(StrEnum):
    """What transition.lua answered (a job's end, retry, skip, stop or cancel)."""

    OK = "ok"
    MISSING = "missing"
    # The job is not in a status this transition leaves from.
    CONFLICT = "conflict"
    # The run's lease is gone: another run, or the reaper, has the job now.
    LOST = "lost"


class ReapReply(StrEnum):
    """What reap.lua did with a job whose lease ran out."""

    REQUEUED = "requeued"
    TIMED_OUT = "timed_out"
    POISONED = "poisoned"
    # Its workflow no longer starts steps: cancelled instead.
    HALTED = "halted"
    # The lease was renewed meanwhile, or the job is gone.
    ALIVE = "alive"
    GONE = "gone"


class ClaimOutcome(StrEnum):
    """What claim.lua answered."""

    CLAIMED = "claimed"
    MISSING = "missing"
    # Running under a live lease elsewhere: a duplicate delivery.
    BUSY = "busy"
    # A workflow step delivered before its dependencies completed.
    PARKED = "parked"
    # Finished, cancelled, or a step of a halted workflow.
    SKIP = "skip"
    # Lost its worker `max_deliveries` times: failed.
    POISONED = "poisoned"
    # This worker's machine is draining: the job goes back to its queue.
    DRAINING = "draining"
