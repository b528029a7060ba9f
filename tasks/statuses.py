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


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                      JobStatus.SKIPPED})
WORKFLOW_ACTIVE = frozenset({WorkflowStatus.PENDING, WorkflowStatus.RUNNING})
CANCELLABLE = frozenset({JobStatus.PENDING, JobStatus.WAITING})
# What the submit endpoint answers for a queued job (the seed's contract); the
# stored status is `pending`.
SUBMITTED = "submitted"
