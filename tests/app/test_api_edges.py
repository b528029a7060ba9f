"""Holes found by trying the API as a stranger would: each one closed, on the real stack."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image
from simple_websocket import Client
from simple_websocket import ConnectionError as HandshakeRefused

from tests.support import Api, LiveServer, WebProcess, WorkerProcess

DEEP = "[" * 100_000 + "]" * 100_000
# Under the parser's limit, far over any request's real depth (and the encoder's).
NESTED = '{"type": "echo", "parameters": {"value": ' + "[" * 900 + "]" * 900 + "}}"
# Past the parser's recursion limit, yet within a socket message's 64 KiB.
DEEP_MESSAGE = "[" * 30_000 + "]" * 30_000


def ws_url(server: LiveServer | WebProcess, query: str) -> str:
    return server.url.replace("http", "ws", 1) + "/ws?" + query


@pytest.mark.parametrize("path", ["/api/jobs/submit", "/api/workflows"])
def test_a_body_nested_past_the_parser_is_invalid_json(anonymous: Api, api: Api,
                                                       path: str) -> None:
    for body in (DEEP, NESTED):
        response = api.request("POST", path, data=body,
                               headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "INVALID_JSON")


def test_a_socket_survives_a_message_nested_past_the_parser(live_server: LiveServer,
                                                            api: Api) -> None:
    ws = Client.connect(ws_url(live_server, "api_key=key-tenant-a"))
    try:
        ws.send(DEEP_MESSAGE)
        assert json.loads(ws.receive(timeout=10))["code"] == "INVALID_JSON"
        # The reader lives on: the same socket still subscribes
        job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
        ws.send(json.dumps({"action": "subscribe", "job_id": job_id}))
        assert json.loads(ws.receive(timeout=10))["type"] == "subscribed"
    finally:
        ws.close()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("timeout_seconds", 1_000_000_000, "timeout_seconds: must be at most 21600 seconds"),
    ("prompt", "p" * 2001, "Prompt must be at most 2000 characters"),
])
def test_a_workflow_step_obeys_the_limits_of_a_job(api: Api, field: str, value: object,
                                                   message: str) -> None:
    step = {"type": "text-to-image", "prompt": "a fox", field: value}
    job = api.submit({**step})
    workflow = api.request("POST", "/api/workflows", json={"name": "big", "steps": [step]})
    for response in (job, workflow):
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]


def test_an_artifact_is_never_kept_by_a_shared_cache(api: Api) -> None:
    job_id = api.submit_ok({"type": "text-to-image", "prompt": "a fox",
                            "parameters": {"width": 64, "height": 64}})
    url = api.wait(job_id)["result"]["artifacts"][0]["url"]
    response = api.request("GET", url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_uploads_decode_only_the_promised_formats(api: Api, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format=fmt)
    response = api.request("POST", "/api/artifacts", files={"file": ("in", buffer.getvalue())})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "INVALID_UPLOAD")


@pytest.mark.parametrize(("path", "code"), [
    ("/api/jobs/abc:events/status", "JOB_NOT_FOUND"),
    ("/api/jobs/abc:events/events", "JOB_NOT_FOUND"),
    ("/api/workflows/x*y/status", "WORKFLOW_NOT_FOUND"),
    ("/api/artifacts/abc:def", "ARTIFACT_NOT_FOUND"),
])
def test_a_malformed_id_is_not_found(api: Api, path: str, code: str) -> None:
    response = api.request("GET", path)
    assert (response.status_code, response.json()["error"]["code"]) == (404, code)


def test_an_event_id_beyond_redis_is_a_400_not_a_503(api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    for since in ("99999999999999999999", "1-99999999999999999999", "1\n",
                  "18446744073709551615-18446744073709551615"):
        response = api.request("GET", f"/api/jobs/{job_id}/events", params={"since": since})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "INVALID_QUERY")


def test_a_ticket_opens_one_socket_once(live_server: LiveServer, api: Api) -> None:
    answer = api.request("POST", "/api/ws-tickets")
    assert answer.status_code == 201 and answer.json()["expires_in"] == 60
    ticket = answer.json()["ticket"]
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    ws = Client.connect(ws_url(live_server, f"ticket={ticket}"))
    try:
        ws.send(json.dumps({"action": "subscribe", "job_id": job_id}))
        assert json.loads(ws.receive(timeout=10))["type"] == "subscribed"
    finally:
        ws.close()
    for used_or_unknown in (ticket, "x" * 32):
        with pytest.raises(HandshakeRefused) as refused:
            Client.connect(ws_url(live_server, f"ticket={used_or_unknown}"))
        assert refused.value.status_code == 401
    assert requests.post(f"{live_server.url}/api/ws-tickets", timeout=5).status_code == 401


@pytest.fixture
def web(stack_env: dict[str, str], worker: WorkerProcess, tmp_path: Path) -> Iterator[WebProcess]:
    process = WebProcess(stack_env, tmp_path / "web.log").start()
    yield process
    process.stop()


def test_the_access_log_never_keeps_a_key_from_the_query_string(web: WebProcess) -> None:
    ws = Client.connect(ws_url(web, "api_key=key-tenant-a"))
    ws.close()
    requests.get(f"{web.url}/api/jobs?limit=1&api_key=key-tenant-b", timeout=5)
    requests.get(f"{web.url}/api/jobs?api%5Fkey=key-tenant-b", timeout=5)  # decoded by the app
    requests.get(f"{web.url}/health?ticket=secret-ticket-value", timeout=5)
    web.stop()
    log = web.log_path.read_text()
    assert "/api/jobs?limit=1&api_key=[redacted]" in log and "ticket=[redacted]" in log
    assert "key-tenant" not in log and "secret-ticket-value" not in log


@pytest.mark.parametrize("path", ["/api/jobs/submit", "/api/workflows"])
def test_a_webhook_to_a_private_address_is_refused_at_submit(api: Api, path: str) -> None:
    api.webhook_secret()
    body: dict[str, object] = {"type": "echo", "parameters": {"value": 1}}
    if path == "/api/workflows":
        body = {"name": "hooked", "steps": [body]}
    for url, accepted in (("http://169.254.169.254/latest/meta-data/", False),
                          ("http://10.0.0.1:6379/", False),
                          ("https://93.184.216.34/hook", True)):
        response = api.request("POST", path, json={**body, "webhook_url": url})
        assert (response.status_code == 200) is accepted, response.text
        if not accepted:
            assert "webhook_url: not allowed" in response.json()["error"]["message"]
