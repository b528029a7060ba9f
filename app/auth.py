"""API keys and tenants: `x-api-key` names a tenant; tenant `*` is an operator."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping

from flask import Flask, Response, g, request

from app.errors import ApiError

CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class KeyRing:
    """Looks keys up by digest, so the comparison time says nothing about the keys."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._by_digest = {self._digest(k): t for k, t in keys.items()}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def tenant(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = self._digest(key)
        for known, tenant in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None


def authenticate(keyring: KeyRing, key: str | None) -> str:
    """The tenant for `key`, or a 401."""
    tenant = keyring.tenant(key)
    if tenant is None:
        raise ApiError(401, "UNAUTHORIZED", "A valid x-api-key header is required")
    return tenant


def current_tenant() -> str:
    tenant: str = g.tenant
    return tenant


def init_correlation(app: Flask) -> None:
    """Take the caller's x-correlation-id (or make one) and echo it on every response."""

    @app.before_request
    def take_correlation_id() -> None:
        supplied = request.headers.get("x-correlation-id")
        if supplied is not None and not CORRELATION_ID.match(supplied):
            g.correlation_id = str(uuid.uuid4())
            raise ApiError(400, "INVALID_CORRELATION_ID",
                           "x-correlation-id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        g.correlation_id = supplied or str(uuid.uuid4())

    @app.after_request
    def echo_correlation_id(response: Response) -> Response:
        response.headers["x-correlation-id"] = g.get("correlation_id", "")
        return response
