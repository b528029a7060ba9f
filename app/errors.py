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

from tasks.core.errors import ChordlineError, Unavailable, ValidationFailed

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("INVALID_REQUEST", "The request is malformed"),
    401: ("UNAUTHORIZED", "A valid x-api-key header is required"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
}


class ApiError(ChordlineError):
    """An answer the web layer itself decides on (a bad header, a missing record): the
    hierarchy's base with its status given here."""

    def __init__(self, status: int, code: str, message: str,
                 details: Mapping[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, code=code, details=details, retry_after=retry_after)
        self.status = status


def validation_failed(code: str, what: str, errors: Mapping[str, Any]) -> ValidationFailed:
    """A 400 whose message reads like the seed's: 'Job validation failed: a, b'."""
    return ValidationFailed(errors, code=code, what=what)


def error_response(status: int, code: str, message: str,
                   details: Mapping[str, Any] | None = None) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return jsonify({"success": False, "error": error}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ChordlineError)
    def on_chordline_error(exc: ChordlineError) -> tuple[Response, int]:
        """Every error of the hierarchy (tasks/core/errors.py), with its code and status."""
        if exc.status >= 500 and not isinstance(exc, Unavailable | ApiError):
            return on_unexpected(exc)
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
