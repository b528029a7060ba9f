"""Job and workflow statuses: defined once, used by the API, the store, the Lua scripts
and the tests (the Lua scripts spell the same strings)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A workflow step whose `when` condition was false; its dependents still run.
    SKIPPED = "skipped"
    # A completed step whose work the workflow's saga undid, or failed to undo.
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A step failed for good (or the workflow was cancelled with `compensate`):
    # the completed steps are being undone, then the workflow ends in one of the two after.
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                      JobStatus.SKIPPED, JobStatus.COMPENSATED, JobStatus.COMPENSATION_FAILED})
WORKFLOW_ACTIVE = frozenset({WorkflowStatus.PENDING, WorkflowStatus.RUNNING})
# The workflow changes no more (unless an operator restarts its compensation).
WORKFLOW_FINAL = frozenset(WorkflowStatus) - WORKFLOW_ACTIVE - {WorkflowStatus.COMPENSATING}
# Steps whose work a compensation still has to undo.
TO_COMPENSATE = frozenset({JobStatus.COMPLETED, JobStatus.COMPENSATION_FAILED})
CANCELLABLE = frozenset({JobStatus.PENDING, JobStatus.WAITING})
# What the submit endpoint answers for a queued job (the seed's contract); the
# stored status is `pending`.
SUBMITTED = "submitted"
