"""Health and readiness, without authentication (for load balancers and operators)."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint

from tasks.core.clock import iso
from tasks.services import current_services

bp = Blueprint("health", __name__)


def _check_redis() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        current_services().redis.ping()
    except redis.RedisError as exc:
        return {"status": "unhealthy", "error": str(exc) or type(exc).__name__}
    return {"status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@bp.get("/health")
def health() -> tuple[dict[str, Any], int]:
    """Redis must answer; workers are reported (none online is degraded, not down)."""
    checks: dict[str, Any] = {"redis": _check_redis()}
    if checks["redis"]["status"] == "healthy":
        workers = current_services().machines.live_workers()
        checks["workers"] = {"status": "healthy" if workers else "degraded",
                             "online": len(workers)}
    healthy = checks["redis"]["status"] == "healthy"
    body = {"status": "healthy" if healthy else "unhealthy", "checks": checks, "timestamp": iso()}
    return body, 200 if healthy else 503


@bp.get("/health/ready")
def ready() -> tuple[dict[str, Any], int]:
    """Ready to take requests: Redis answers."""
    ok = _check_redis()["status"] == "healthy"
    return {"status": "ready" if ok else "not_ready", "timestamp": iso()}, 200 if ok else 503
