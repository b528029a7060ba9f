"""What the workflow and saga scripts answer (tasks/workflows/lua/), one enum per script."""

from __future__ import annotations

from enum import StrEnum


class SagaClaim(StrEnum):
    """saga_claim.lua: whether this run holds the workflow's compensation."""

    CLAIMED = "claimed"
    # Another run holds it under a live lease.
    BUSY = "busy"
    # Steps still running must stop or finish first.
    EARLY = "early"
    # Nothing to compensate (any more), or the workflow is gone.
    SKIP = "skip"
    MISSING = "missing"


class AttemptReply(StrEnum):
    """saga_attempt.lua: whether to try a step's compensation now."""

    OK = "ok"
    # Compensated already, or it has nothing to undo.
    DONE = "done"
    SKIP = "skip"
    LOST = "lost"
    EXHAUSTED = "exhausted"


class SagaReply(StrEnum):
    """saga_settle.lua and saga_finish.lua: the run's step was recorded, or not."""

    OK = "ok"
    LOST = "lost"
    # saga_finish.lua: a completed step is not compensated yet.
    UNFINISHED = "unfinished"


class CancelReply(StrEnum):
    """cancel_workflow.lua and saga_restart.lua."""

    OK = "ok"
    MISSING = "missing"
    CONFLICT = "conflict"
    # saga_restart.lua: no completed step is left to undo.
    NOTHING = "nothing"
