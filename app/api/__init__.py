"""Authenticated API blueprints and the request helpers they share."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, request
from marshmallow import Schema, ValidationError

from app.auth import authenticate
from app.errors import ApiError, validation_failed
from tasks.settings import OPERATOR_TENANT


def api_blueprint(name: str, import_name: str, *, operators_only: bool = False) -> Blueprint:
    """A blueprint whose every request must carry a valid x-api-key (an operator's, 403
    for a tenant's, with `operators_only`)."""
    blueprint = Blueprint(name, import_name)

    @blueprint.before_request
    def require_api_key() -> None:
        g.tenant = authenticate(current_app.extensions["keyring"],
                                request.headers.get("x-api-key"))
        if operators_only:
            require_operator()

    return blueprint


def require_operator() -> None:
    if g.tenant != OPERATOR_TENANT:
        raise ApiError(403, "FORBIDDEN", "Only an operator key may do this")


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
