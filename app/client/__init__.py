"""A Python client for Chordline's API: jobs, workflows, and their events live.

`watch` follows a job or workflow over the WebSocket and resumes after a dropped
connection from the last event id it saw, so a caller sees every event once, in
order, until the job or workflow ends.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from simple_websocket import Client, ConnectionClosed, ConnectionError

from tasks.core.errors import ChordlineError
from tasks.core.events import EventType, parse_id

# The events after which a job or workflow changes no more.
FINAL_EVENTS = {
    "job": frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED,
                      EventType.JOB_SKIPPED}),
    "workflow": frozenset({EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED,
                           EventType.WORKFLOW_CANCELLED, EventType.WORKFLOW_COMPENSATED,
                           EventType.WORKFLOW_COMPENSATION_FAILED}),
}


class ClientError(ChordlineError):
    """The API refused a request: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})", code=code)
        self.status = status
        self.message = message


class ChordlineClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._http = requests.Session()
        if api_key:
            self._http.headers["x-api-key"] = api_key

    # -- HTTP ----------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout", self.timeout)
        response = self._http.request(method, self.base_url + path, **kwargs)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise ClientError(response.status_code, "INVALID_RESPONSE",
                              response.text[:200]) from None
        if not response.ok:
            error = body.get("error") or {}
            raise ClientError(response.status_code, error.get("code", "HTTP_ERROR"),
                              error.get("message", response.reason))
        return body

    def submit(self, spec: Mapping[str, Any]) -> tuple[str, str]:
        """Submit a job, or a workflow when `spec` has `steps`: (kind, id)."""
        if "steps" in spec:
            return "workflow", str(self.request("POST", "/api/workflows", json=spec)["workflow_id"])
        return "job", str(self.request("POST", "/api/jobs/submit", json=spec)["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.request("GET", f"/api/jobs/{job_id}/status")["job"]
        return job

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """`{"workflow": ..., "steps": [...]}`."""
        return self.request("GET", f"/api/workflows/{workflow_id}/status")

    def kind_of(self, ident: str) -> str:
        """Whether `ident` names a job or a workflow of this tenant."""
        for kind, path in (("job", "jobs"), ("workflow", "workflows")):
            try:
                self.request("GET", f"/api/{path}/{ident}/status")
                return kind
            except ClientError as exc:
                if exc.status != 404:
                    raise
        raise ClientError(404, "NOT_FOUND", f"No job or workflow with ID {ident}")

    def cancel(self, kind: str, ident: str, reason: str | None = None,
               terminate: bool = False, compensate: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason} if reason else {}
        body["terminate"] = terminate
        if kind == "workflow":
            body["compensate"] = compensate
            return self.request("POST", f"/api/workflows/{ident}/cancel", json=body)
        return self.request("POST", f"/api/jobs/{ident}/cancel", json=body)

    def compensate(self, workflow_id: str) -> dict[str, Any]:
        """Retry a workflow's failed compensation, or undo a cancelled one's steps."""
        return self.request("POST", f"/api/workflows/{workflow_id}/compensate")

    def events(self, kind: str, ident: str, since: str = "0") -> list[dict[str, Any]]:
        """The stored history, every page of it."""
        events: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", f"/api/{kind}s/{ident}/events",
                                params={"since": since, "limit": 10_000})
            events += page["events"]
            if not page["next_since"]:
                return events
            since = page["next_since"]

    # -- WebSocket -----------------------------------------------------------

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"

    def connect(self) -> Client:
        headers = {"x-api-key": self.api_key} if self.api_key else None
        return Client.connect(self.ws_url, headers=headers)

    def watch(self, kind: str, ident: str, since: str = "0", *,
              reconnect_delay: float = 1.0, max_reconnects: int = 30,
              idle_timeout: float = 90.0) -> Iterator[dict[str, Any]]:
        """Every event of a job or workflow after `since`, until its final one.

        A dropped connection is resumed from the last id seen: the server
        replays what was missed, so nothing is lost and nothing repeats.
        """
        failures = 0
        while True:
            try:
                ws = self.connect()
            except (ConnectionError, OSError):
                failures += 1
                if failures > max_reconnects:
                    raise
                time.sleep(reconnect_delay)
                continue
            try:
                ws.send(json.dumps({"action": "subscribe", f"{kind}_id": ident, "since": since}))
                while True:
                    raw = ws.receive(timeout=idle_timeout)
                    if raw is None:
                        raise ConnectionError("no message or ping within the idle timeout")
                    message = json.loads(raw)
                    if message["type"] == "error":
                        raise ClientError(400, message["code"], message["message"])
                    if "id" not in message or parse_id(message["id"]) <= parse_id(since):
                        continue
                    failures = 0
                    since = message["id"]
                    yield message
                    if message["type"] in FINAL_EVENTS[kind] and \
                            message.get(f"{kind}_id") == ident:
                        return
            except (ConnectionClosed, ConnectionError, OSError):
                failures += 1
                if failures > max_reconnects:
                    raise
                time.sleep(reconnect_delay)
            finally:
                with contextlib.suppress(ConnectionClosed):
                    ws.close()
