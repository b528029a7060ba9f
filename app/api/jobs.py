"""/api/jobs: submit, read, list, count and cancel jobs."""

from __future__ import annotations

from typing import Any

import redis
from flask import Response, g, jsonify

from app.api import api_blueprint, json_body, query
from app.api.events import history
from app.api.idempotency_key import idempotent
from app.auth import current_tenant
from app.errors import ApiError
from app.schemas.jobs import JOB, JOB_CANCEL, JOB_LIST_QUERY, JOB_SUBMIT, TIMEFRAME_QUERY
from app.waiting import applied, requested_wait, wait_until_final
from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.core.events import job_feed
from tasks.core.statuses import SUBMITTED
from tasks.services import current_services

bp = api_blueprint("jobs", __name__)
TIMEFRAMES_MS = {"hour": 3_600_000, "day": 86_400_000, "week": 604_800_000}


@bp.post("/submit")
@idempotent
def submit() -> dict[str, Any] | Response:
    """Validate and queue a job; the answer's status is `submitted`."""
    request = json_body(JOB_SUBMIT, "JOB_SUBMISSION_FAILED", "Job")
    services = current_services()
    job = services.jobs.submit(current_tenant(), request, g.correlation_id)
    wait = requested_wait()
    if wait is None:
        return {"success": True, "job_id": job.id, "status": SUBMITTED}
    # Prefer: wait: the answer is the job as it stands when final or when the wait ends.
    wait_until_final(job.id, current_tenant(), wait)
    try:
        found = services.store.get(job.id)
    except redis.RedisError:  # the job exists: say so, rather than a 503 that invites a retry
        found = None
    body = JOB.dump(found.fields) if found else {"status": SUBMITTED}
    return applied(jsonify({"success": True, "job_id": job.id, "status": body["status"],
                            "job": body}), wait)


@bp.get("/<job_id>/status")
def status(job_id: str) -> Response:
    """The job; with `Prefer: wait=N`, once it is final or after N seconds."""
    wait = requested_wait()
    if wait:
        wait_until_final(job_id, current_tenant(), wait)
    job = current_services().store.get(job_id, current_tenant())
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", f"Job with ID {job_id} not found")
    response = jsonify({"success": True, "job": JOB.dump(job.fields)})
    return applied(response, wait) if wait is not None else response


@bp.get("/<job_id>/events")
def events(job_id: str) -> dict[str, Any]:
    """The job's history, oldest first (`since` an event id to resume after it)."""
    if current_services().store.get(job_id, current_tenant()) is None:
        raise ApiError(404, "JOB_NOT_FOUND", f"Job with ID {job_id} not found")
    return history(job_feed(job_id))


@bp.get("/<job_id>/webhooks")
def webhooks(job_id: str) -> dict[str, Any]:
    """The job's webhook deliveries, each with its attempts and next retry."""
    services = current_services()
    if services.store.get(job_id, current_tenant()) is None:
        raise ApiError(404, "JOB_NOT_FOUND", f"Job with ID {job_id} not found")
    return {"success": True, "deliveries": services.webhooks.deliveries(keys.job_webhooks(job_id))}


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a job that has not started (or, with `terminate`, a running one); a
    finished job answers 409."""
    body = json_body(JOB_CANCEL, "INVALID_REQUEST", "Cancel", optional=True)
    result = current_services().jobs.cancel(job_id, current_tenant(), body["reason"],
                                            body["terminate"])
    if not result.cancelled:
        raise ApiError(409, "JOB_NOT_CANCELLABLE", f"Cannot cancel job in status: {result.status}")
    return {"success": True, "message": "Job cancelled successfully"}


@bp.get("/stats")
def stats() -> dict[str, Any]:
    args = query(TIMEFRAME_QUERY, "INVALID_TIMEFRAME", "Timeframe must be hour, day, or week")
    services = current_services()
    counts = services.store.stats(current_tenant(), now_ms() - TIMEFRAMES_MS[args["timeframe"]],
                                  services.registry.types())
    return {"success": True, "stats": counts, "timeframe": args["timeframe"]}


@bp.get("")
def list_jobs() -> dict[str, Any]:
    """Newest first, filtered by `status` and `type`; follow `next_cursor` for more."""
    args = query(JOB_LIST_QUERY, "INVALID_QUERY", "Invalid list query")
    page = current_services().store.page(
        current_tenant(), status=args.get("status"), job_type=args.get("type"),
        limit=args["limit"], cursor=args.get("cursor"))
    return {"success": True, "jobs": [JOB.dump(j.fields) for j in page.jobs],
            "next_cursor": page.next_cursor}

