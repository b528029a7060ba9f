"""Per-tenant quotas on a stack whose limits are small enough to reach."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from simple_websocket import ConnectionError as HandshakeRefused

from app import create_app
from tests.support import Api, LiveServer, Socket, overrides_from_env, wait_for

ECHO = {"type": "echo", "parameters": {"value": 1}}
# A job no node can take: it stays pending, so it counts as unfinished.
WAITS = {"type": "echo", "parameters": {"value": 1}, "requirements": {"labels": {"zone": "none"}}}


@pytest.fixture
def strict(stack_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Flask]:
    """An API whose quotas are small (the test's `quotas` marker may change them)."""
    marker = request.node.get_closest_marker("quotas")
    quotas = {"quota_submits_per_second": 2.0, "quota_unfinished_jobs": 3,
              "quota_max_priority": 80, **(marker.kwargs if marker else {})}
    app = create_app({**overrides_from_env(stack_env), **quotas})
    services = app.extensions["chordline"]
    for key in services.redis.scan_iter("chordline:quota:*"):
        services.redis.delete(key)
    yield app
    app.extensions["event_hub"].stop()


def submit(client: FlaskClient, body: dict[str, Any], key: str = "key-tenant-b") -> Any:
    return client.post("/api/jobs/submit", json=body, headers={"x-api-key": key})


@pytest.mark.quotas(quota_unfinished_jobs=1000)
def test_a_burst_past_the_rate_is_429_with_retry_after(strict: Flask) -> None:
    client = strict.test_client()
    answers = [submit(client, ECHO) for _ in range(6)]
    assert [a.status_code for a in answers[:4]] == [200] * 4  # a burst of twice the rate
    refused = answers[-1]
    assert (refused.status_code, refused.json["error"]["code"]) == (429, "RATE_LIMITED")
    assert int(refused.headers["Retry-After"]) >= 1
    # Operators are not limited
    assert all(submit(client, ECHO, "key-operator").status_code == 200 for _ in range(6))


def test_unfinished_jobs_past_the_quota_are_429(strict: Flask) -> None:
    client = strict.test_client()
    services = strict.extensions["chordline"]
    assert services.redis.zcard("chordline:idx:stats:status:pending") == 0
    answers = [submit(client, WAITS, "key-stats-only") for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200] * 3
    assert (answers[3].status_code, answers[3].json["error"]["code"]) == (429, "QUOTA_EXCEEDED")
    cancel = {"x-api-key": "key-stats-only"}
    for answer in answers[:3]:
        client.post(f"/api/jobs/{answer.json['job_id']}/cancel", json={}, headers=cancel)
    # Finished jobs free the quota
    again = submit(client, WAITS, "key-stats-only")
    assert again.status_code == 200
    client.post(f"/api/jobs/{again.json['job_id']}/cancel", json={}, headers=cancel)


def test_a_priority_above_the_ceiling_is_refused_for_jobs_and_steps(strict: Flask) -> None:
    client = strict.test_client()
    job = submit(client, {**ECHO, "priority": 90})
    workflow = client.post("/api/workflows", headers={"x-api-key": "key-tenant-b"}, json={
        "name": "urgent", "steps": [{**ECHO, "priority": 95}]})
    for answer in (job, workflow):
        assert answer.status_code == 400
        assert "priority must be at most 80" in answer.json["error"]["message"]


@pytest.mark.quotas(quota_websockets=2, quota_replay_events=3)
def test_a_tenants_sockets_and_replays_are_bounded(strict: Flask, api: Api) -> None:
    server = LiveServer(strict).start()
    sockets: list[Socket] = []
    try:
        sockets = [Socket(server.url, "key-tenant-a") for _ in range(2)]
        with pytest.raises(HandshakeRefused) as refused:
            Socket(server.url, "key-tenant-a")
        assert refused.value.status_code == 429
        operator = Socket(server.url, "key-operator")  # operators are not bounded
        operator.close()
        # A job's history longer than the cap is refused over the socket, not replayed
        job_id = api.submit_ok({"type": "sleep", "parameters": {"seconds": 0.3}})
        api.wait(job_id)
        answer = sockets[0].subscribe(job_id=job_id, since="0")
        assert (answer["type"], answer["code"]) == ("error", "QUOTA_EXCEEDED")
        # A closed socket frees its seat at once
        sockets.pop().close()
        wait_for(lambda: _opens(server.url), 5, message="the freed seat")
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def _opens(url: str) -> bool:
    try:
        Socket(url, "key-tenant-a").close()
    except HandshakeRefused:
        return False
    return True


def noisy_png(side: int = 64) -> bytes:
    """An image that PNG cannot shrink much (about 12 KiB at 64 px)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.quotas(quota_storage_bytes=20_000, quota_unfinished_jobs=1000,
                    quota_submits_per_second=100.0)
def test_stored_bytes_past_the_quota_refuse_uploads_and_submissions(strict: Flask) -> None:
    client = strict.test_client()
    tenant_b = {"x-api-key": "key-tenant-b", "content-type": "image/png"}
    answers = [client.post("/api/artifacts", data=noisy_png(), headers=tenant_b)
               for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    refused = answers[2]
    assert refused.json["error"]["code"] == "QUOTA_EXCEEDED"
    assert "bytes of images" in refused.json["error"]["message"]
    retention = strict.extensions["chordline"].settings.job_retention
    # Until the soonest files expire (their hour's bucket ends)
    assert retention - 60 <= int(refused.headers["Retry-After"]) <= retention + 3600
    submitted = submit(client, ECHO)
    assert (submitted.status_code, submitted.json["error"]["code"]) == (429, "QUOTA_EXCEEDED")
    # Other tenants and operators are not held back
    assert submit(client, ECHO, "key-tenant-a").status_code == 200
    assert client.post("/api/artifacts", data=noisy_png(),
                       headers={**tenant_b, "x-api-key": "key-operator"}).status_code == 201
