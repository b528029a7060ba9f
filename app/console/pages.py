"""The console's pages: sign-in and sign-out, then one view per thing an operator watches."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from app.api import check_record_ids, record_action
from app.api.workflows import workflow_status
from app.auth import Principal, Role, check_csrf, check_origin, digest, identify
from app.console import bp
from app.errors import ApiError
from app.schemas.jobs import JOB
from app.schemas.workflows import WORKFLOW
from tasks.core import keys
from tasks.core.clock import now_ms, parse_iso
from tasks.core.events import EVERYTHING, is_event_id, job_feed, workflow_feed
from tasks.core.statuses import JobStatus, WorkflowStatus
from tasks.services import current_services

View = Callable[..., Any]
# How many of the newest jobs a machine filter looks through (jobs are indexed by
# status, type and tenant, not by machine).
MACHINE_SCAN = 1000


def signed_in(view: View) -> View:
    """Pages need a console session (an operator's or a viewer's); else, the sign-in page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = identify() if not request.headers.get("x-api-key") else None
        if principal is None or principal.via != "console":
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        g.principal = principal
        check_record_ids()  # the API's one check of ids in a path
        # Read before the page's data, so the page's live feed resumes from here.
        g.since = current_services().events.last_id(EVERYTHING)
        return view(*args, **kwargs)

    return wrapper


def page(template: str, title: str, data: dict[str, Any], **context: Any) -> str:
    principal: Principal = g.principal
    return render_template(f"console/{template}", title=title, data={**data, "since": g.since},
                           principal=principal, can_act=principal.role == Role.OPERATOR,
                           csrf=g.console_session.csrf, **context)


@bp.get("/login")
def login() -> str:
    return render_template("console/login.html", error=None, next=_next())


@bp.post("/login")
def sign_in() -> Response | tuple[str, int]:
    """Trade an operator's or a viewer's key for a session cookie; a tenant's key is refused.

    Only from this site (no other page may sign a browser in as someone else), and
    an address that keeps guessing is turned away for a while; refusals are audited."""
    check_origin()
    sessions = current_app.extensions["console_sessions"]
    address = request.remote_addr or "unknown"
    if sessions.locked_out(address):
        raise ApiError(429, "RATE_LIMITED", "Too many refused sign-ins from this address; "
                       "try again in a few minutes")
    key = request.form.get("key", "").strip()
    principal = current_app.extensions["keyring"].principal(key)
    if principal is None or not principal.is_staff:
        sessions.refused(address)
        error, status = (("That key is not known.", 401) if principal is None else
                         ("A tenant key cannot sign in to the console.", 403))
        record_action(status, "SIGN_IN_REFUSED", action="console.sign_in",
                      who=principal.who if principal else f"unknown@{address}")
        return render_template("console/login.html", error=error, next=_next()), status
    response = make_response(redirect(_next()))
    current_app.extensions["console_sessions"].start(digest(key), response)
    g.principal = Principal(principal.tenant, principal.role, principal.fingerprint, "console")
    record_action(200, None, action="console.sign_in")
    return response


@bp.post("/logout")
def sign_out() -> Response:
    """End the session everywhere; the cookie goes even when its key was revoked meanwhile."""
    sessions = current_app.extensions["console_sessions"]
    principal = identify()
    response = make_response(redirect(url_for("console.login")))
    if principal is not None and principal.via == "console":
        check_csrf()
        g.principal = principal
        record_action(200, None, action="console.sign_out")
    else:
        check_origin()
    sessions.end(sessions.current(), response)
    return response


def _next() -> str:
    """Where to go after signing in: a console page, never another site."""
    target = request.values.get("next") or ""
    return target if target.startswith("/dashboard/") and "//" not in target else \
        url_for("console.overview")


@bp.get("/")
@signed_in
def overview() -> str:
    return page("overview.html", "Overview", current_services().overview.summary(now_ms()))


@bp.get("/machines")
@signed_in
def machines() -> str:
    return page("machines.html", "Machines",
                {"machines": current_services().machines.describe_all()})


@bp.get("/jobs")
@signed_in
def jobs() -> str:
    filters = _filters("status", "type", "tenant", "machine")
    if filters["status"] and filters["status"] not in set(map(str, JobStatus)):
        filters["status"] = ""
    services = current_services()
    scope = filters["tenant"] or keys.ALL_TENANTS
    found = services.store.page(scope, status=filters["status"] or None,
                                job_type=filters["type"] or None,
                                limit=MACHINE_SCAN if filters["machine"] else 100).jobs
    if filters["machine"]:
        found = [j for j in found if j.get("machine_id") == filters["machine"]][:100]
    rows = [{**JOB.dump(j.fields), "tenant": j.get("tenant"), "machine_id": j.get("machine_id")}
            for j in found]
    return page("jobs.html", "Jobs", {"jobs": rows}, filters=filters,
                statuses=list(map(str, JobStatus)), types=services.registry.types())


@bp.get("/jobs/<job_id>")
@signed_in
def job(job_id: str) -> str:
    services = current_services()
    found = services.store.get(job_id)
    if found is None:
        raise ApiError(404, "JOB_NOT_FOUND", f"Job with ID {job_id} not found")
    view = {**JOB.dump(found.fields), **{k: found.get(k) for k in (
        "tenant", "machine_id", "worker_id")}}
    events = services.events.read(job_feed(job_id))
    return page("job.html", f"Job {job_id}", {"job": view, "events": events},
                job=view, timing=_timing(view))


def _timing(job: dict[str, Any]) -> dict[str, float | None]:
    """Where a job's time went: waiting for a worker, loading models, running."""
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    timings = (result or {}).get("timings") or {}
    load = timings.get("model_load_ms")
    run = None
    if job.get("started_at") and job.get("completed_at"):
        run = (parse_iso(job["completed_at"]) - parse_iso(job["started_at"])) / 1000
    wait = job.get("queue_wait_ms")
    return {"queue_wait": wait / 1000 if wait is not None else None,
            "model_load": load / 1000 if load is not None else None, "run": run}


@bp.get("/workflows")
@signed_in
def workflows() -> str:
    filters = _filters("status", "tenant")
    if filters["status"] and filters["status"] not in set(map(str, WorkflowStatus)):
        filters["status"] = ""
    found = current_services().workflow_store.page(
        filters["tenant"] or keys.ALL_TENANTS, status=filters["status"] or None, limit=100)
    rows = [{**WORKFLOW.dump(w.fields), "tenant": w.get("tenant")} for w in found.workflows]
    return page("workflows.html", "Workflows", {"workflows": rows}, filters=filters,
                statuses=list(map(str, WorkflowStatus)))


@bp.get("/workflows/<workflow_id>")
@signed_in
def workflow(workflow_id: str) -> str:
    services = current_services()
    found = services.workflow_store.get(workflow_id)
    if found is None:
        raise ApiError(404, "WORKFLOW_NOT_FOUND", f"Workflow with ID {workflow_id} not found")
    data = {**workflow_status(found), "tenant": found.get("tenant"),
            "events": services.events.read(workflow_feed(workflow_id))}
    return page("workflow.html", f"Workflow {found.get('name') or workflow_id}", data,
                workflow=data["workflow"])


@bp.get("/events")
@signed_in
def events() -> str:
    filters = _filters("type", "tenant", "job_id", "workflow_id")
    rows = current_services().events.newest(EVERYTHING, 200)
    return page("events.html", "Events", {"events": rows, "filters": filters}, filters=filters)


@bp.get("/audit")
@signed_in
def audit_log() -> str:
    before = request.args.get("before", "")
    entries = current_services().audit.newest(100, before if is_event_id(before) else "+")
    return page("audit.html", "Audit", {}, entries=entries,
                older=entries[-1]["id"] if len(entries) == 100 else None)


def _filters(*names: str) -> dict[str, str]:
    return {name: request.args.get(name, "").strip()[:128] for name in names}
