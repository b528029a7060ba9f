"""Health and readiness for load balancers and operators."""

from __future__ import annotations

from tests.support import Api


def test_health_reports_redis_and_workers(api: Api) -> None:
    response = api.request("GET", "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["redis"]["status"] == "healthy"
    assert body["checks"]["workers"]["online"] >= 1


def test_ready_needs_no_api_key(anonymous: Api) -> None:
    response = anonymous.request("GET", "/health/ready")
    assert response.status_code == 200 and response.json()["status"] == "ready"
