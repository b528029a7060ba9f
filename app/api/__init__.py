"""Authenticated API blueprints and the request helpers they share."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, Response, g, request
from marshmallow import Schema, ValidationError

from app.auth import SAFE_METHODS, authenticate, require_staff
from app.errors import ApiError, validation_failed
from tasks.core import keys
from tasks.core.clock import iso
from tasks.services import current_services

log = logging.getLogger(__name__)


def api_blueprint(name: str, import_name: str, *, operators_only: bool = False) -> Blueprint:
    """A blueprint whose every request must name a principal (app/auth.py), an operator
    or a viewer with `operators_only`; every change that staff ask for is audited."""
    blueprint = Blueprint(name, import_name)

    @blueprint.before_request
    def require_principal() -> None:
        authenticate()
        if operators_only:
            require_staff()
        check_record_ids()

    @blueprint.after_request
    def audit_staff_changes(response: Response) -> Response:
        principal = g.get("principal")
        if principal is not None and principal.is_staff and request.method not in SAFE_METHODS:
            try:
                record_action(response.status_code, _error_code(response))
            except redis.RedisError:
                log.warning("could not audit %s %s", request.method, request.path,
                            exc_info=True)
        return response

    return blueprint


# A path's record id that could not be one of ours is simply not found.
NOT_FOUND = {"job_id": ("JOB_NOT_FOUND", "Job"), "workflow_id": ("WORKFLOW_NOT_FOUND", "Workflow"),
             "artifact_id": ("ARTIFACT_NOT_FOUND", "Artifact")}


def check_record_ids() -> None:
    """404 for a malformed id in the path, before it comes near a Redis key name."""
    for name, value in (request.view_args or {}).items():
        if name in NOT_FOUND and not keys.RECORD_ID.match(str(value)):
            code, what = NOT_FOUND[name]
            raise ApiError(404, code, f"{what} with ID {value} not found")


def record_action(status: int, error_code: str | None, action: str | None = None,
                  who: str | None = None) -> None:
    """Record the request as an operator action: who, what, on what, when, and how it ended
    (`who` names a caller that has no principal: a refused sign-in)."""
    principal = g.get("principal")
    current_services().audit.record({
        "ts": iso(), "who": who or principal.who,
        "role": str(principal.role) if principal else None,
        "via": principal.via if principal else "console",
        "action": action or request.endpoint, "target": request.view_args or {},
        "method": request.method, "path": request.path, "status": status,
        "outcome": "ok" if status < 400 else (error_code or "error"),
        "correlation_id": g.get("correlation_id")})


def _error_code(response: Response) -> str | None:
    if response.status_code < 400 or not response.is_json:
        return None
    body = response.get_json(silent=True) or {}
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def json_body(schema: Schema, code: str, what: str, *, optional: bool = False) -> dict[str, Any]:
    """Parse and validate the JSON body; any problem is a 400 with `code`."""
    if optional and not request.get_data():
        body: Any = {}
    else:
        body = request.get_json(force=True, silent=True)
    if body is None:
        raise ApiError(400, "INVALID_JSON", "The request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, code, f"{what} validation failed: the body must be a JSON object")
    try:
        data: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        raise validation_failed(code, what, exc.normalized_messages()) from None
    return data


def query(schema: Schema, code: str, message: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = schema.load(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, code, message, exc.normalized_messages()) from None
    return data
