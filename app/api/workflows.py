"""/api/workflows: create, read, list, count, cancel and compensate multi-step workflows."""

from __future__ import annotations

from typing import Any

from flask import g

from app.api import api_blueprint, json_body, query
from app.api.events import history
from app.api.idempotency_key import idempotent
from app.api.jobs import TIMEFRAMES_MS
from app.auth import current_tenant
from app.errors import ApiError
from app.schemas.jobs import TIMEFRAME_QUERY
from app.schemas.workflows import (
    STEP_STATUS,
    WORKFLOW,
    WORKFLOW_CANCEL,
    WORKFLOW_CREATE,
    WORKFLOW_LIST_QUERY,
)
from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.events import workflow_feed
from tasks.core.statuses import JobStatus, WorkflowStatus
from tasks.jobs.store import Job
from tasks.services import current_services
from tasks.workflows.store import Workflow

bp = api_blueprint("workflows", __name__)
CODE = "WORKFLOW_CREATION_FAILED"
DONE = (JobStatus.COMPLETED, JobStatus.SKIPPED)


@bp.post("")
@idempotent
def create() -> dict[str, Any]:
    """Validate the steps, store them as jobs and publish the compiled canvas."""
    request = json_body(WORKFLOW_CREATE, CODE, "Workflow")
    workflow = current_services().workflows.create(current_tenant(), request, g.correlation_id)
    return {"success": True, "workflow_id": workflow.id, "job_ids": workflow.job_ids}


@bp.get("/<workflow_id>/status")
def status(workflow_id: str) -> dict[str, Any]:
    """The workflow and each of its steps, read in two round trips."""
    return {"success": True, **workflow_status(_get(workflow_id))}


def workflow_status(workflow: Workflow) -> dict[str, Any]:
    """The workflow and each of its steps as the status endpoint (and the console) shows them."""
    steps = [(i, job) for i, job in enumerate(current_services().workflow_store.steps(workflow))
             if job is not None]
    return {"workflow": _summary(workflow, [job for _, job in steps]),
            "steps": [_step(i, job) for i, job in steps]}


@bp.get("/<workflow_id>/events")
def events(workflow_id: str) -> dict[str, Any]:
    """The workflow's history with its steps' events, oldest first."""
    _get(workflow_id)
    return history(workflow_feed(workflow_id))


@bp.get("/<workflow_id>/webhooks")
def webhooks(workflow_id: str) -> dict[str, Any]:
    """The workflow's webhook deliveries (its own events and its steps'), in event order."""
    _get(workflow_id)
    return {"success": True, "deliveries": current_services().webhooks.deliveries(
        keys.workflow_webhooks(workflow_id))}


@bp.post("/<workflow_id>/cancel")
def cancel(workflow_id: str) -> dict[str, Any]:
    """Cancel the steps that have not started; `terminate` stops running ones too, and
    `compensate` undoes the completed ones (the workflow ends compensated)."""
    body = json_body(WORKFLOW_CANCEL, "INVALID_REQUEST", "Cancel", optional=True)
    summary = current_services().workflows.cancel(
        workflow_id, current_tenant(), body["reason"], terminate=body["terminate"],
        compensate=body["compensate"])
    compensating = summary.status == WorkflowStatus.COMPENSATING
    verb = "cancelled; compensating its completed steps" if compensating else "cancelled"
    return {"success": True, "status": summary.status,
            "message": f"Workflow {verb} ({summary.cancelled}/{summary.total} jobs cancelled)",
            "cancelled_jobs": summary.cancelled, "terminated_jobs": len(summary.stopped)}


@bp.post("/<workflow_id>/compensate")
def compensate(workflow_id: str) -> tuple[dict[str, Any], int]:
    """Retry a failed compensation, or undo a cancelled workflow's completed steps."""
    status = current_services().workflows.compensate(workflow_id, current_tenant())
    return {"success": True, "status": status,
            "message": "Compensation started; follow it at the workflow's status or events"}, 202


@bp.get("/stats")
def stats() -> dict[str, Any]:
    args = query(TIMEFRAME_QUERY, "INVALID_TIMEFRAME", "Timeframe must be hour, day, or week")
    counts = current_services().workflow_store.stats(
        current_tenant(), now_ms() - TIMEFRAMES_MS[args["timeframe"]])
    return {"success": True, "stats": counts, "timeframe": args["timeframe"]}


@bp.get("")
def list_workflows() -> dict[str, Any]:
    """Newest first, filtered by `status`; follow `next_cursor` for more."""
    args = query(WORKFLOW_LIST_QUERY, "INVALID_QUERY", "Invalid list query")
    page = current_services().workflow_store.page(
        current_tenant(), status=args.get("status"), limit=args["limit"],
        cursor=args.get("cursor"))
    return {"success": True, "workflows": [_summary(w) for w in page.workflows],
            "next_cursor": page.next_cursor}


def _get(workflow_id: str) -> Workflow:
    workflow = current_services().workflow_store.get(workflow_id, current_tenant())
    if workflow is None:
        raise ApiError(404, "WORKFLOW_NOT_FOUND", f"Workflow with ID {workflow_id} not found")
    return workflow


def _summary(workflow: Workflow, steps: list[Job] | None = None) -> dict[str, Any]:
    """The seed's workflow shape; with the steps at hand, progress counts partial steps."""
    total = workflow["total_steps"]
    done = workflow["completed_steps"]
    if steps is None:
        progress = 100.0 * done / total if total else 0.0
    else:
        progress = sum(100 if j.status in DONE else j.get("progress", 0) for j in steps) / total
    return WORKFLOW.dump({**workflow.fields, "completed_steps": done,
                          "progress_percentage": round(progress, 2)})


def _step(index: int, job: Job) -> dict[str, Any]:
    return STEP_STATUS.dump({**job.fields, "step_index": index, "job_id": job.id})
