"""The error contract: `{"success": false, "error": {"code", "message"}}`, owned here.

Every failure leaves through these handlers: bad input is a 4xx with a stable
code, an unavailable Redis or broker is a 503, and anything unexpected is a 500
without a traceback (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from tasks.storage.quotas import QuotaExceeded

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("INVALID_REQUEST", "The request is malformed"),
    401: ("UNAUTHORIZED", "A valid x-api-key header is required"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
}


class ApiError(Exception):
    """A 4xx (or 503) with a stable code; `retry_after` (seconds) becomes Retry-After."""

    def __init__(self, status: int, code: str, message: str,
                 details: Mapping[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after


def validation_failed(code: str, what: str, errors: Mapping[str, Any]) -> ApiError:
    """A 400 whose message reads like the seed's: 'Job validation failed: a, b'."""
    flat = flatten(errors)
    parts = [m if name.split(".")[-1].lower() in m.lower() else f"{name}: {m}"
             for name, messages in flat.items() for m in messages]
    return ApiError(400, code, f"{what} validation failed: {', '.join(parts)}", flat)


def flatten(errors: Mapping[str, Any], prefix: str = "") -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    for name, value in errors.items():
        key = prefix if name == "_schema" and prefix else (
            f"{prefix}.{name}" if prefix else str(name))
        if isinstance(value, Mapping):
            flat.update(flatten(value, key))
        else:
            flat.setdefault(key, []).extend(str(v) for v in value)
    return flat


def error_response(status: int, code: str, message: str,
                   details: Mapping[str, Any] | None = None) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return jsonify({"success": False, "error": error}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def on_api_error(exc: ApiError) -> tuple[Response, int]:
        response, status = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code, message = HTTP_CODES.get(status, ("HTTP_ERROR", exc.name))
        if status == 404:
            message = f"Endpoint {request.method} {request.path} not found"
        response, status = error_response(status, code, message)
        # What the exception says besides its page: a 405's Allow, a 416's Content-Range.
        response.headers.extend((name, value) for name, value in exc.get_headers()
                                if name.lower() != "content-type")
        return response, status

    @app.errorhandler(QuotaExceeded)
    def on_quota(exc: QuotaExceeded) -> tuple[Response, int]:
        response, status = error_response(429, exc.code, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(redis.RedisError)
    def on_redis_error(exc: redis.RedisError) -> tuple[Response, int]:
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, "SERVICE_UNAVAILABLE",
                              "The job store (Redis) is unavailable; try again shortly")

    @app.errorhandler(OperationalError)
    def on_broker_error(exc: OperationalError) -> tuple[Response, int]:
        log.warning("broker unavailable: %s", exc)
        return error_response(503, "BROKER_UNAVAILABLE",
                              "The message broker is unavailable; try again shortly")

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "An internal error occurred")
