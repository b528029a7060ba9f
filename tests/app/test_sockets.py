"""/ws over a real socket, with a real worker running the workflows whose events it carries."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import wsproto
import wsproto.events
from flask import Flask
from simple_websocket import Client
from simple_websocket import ConnectionError as HandshakeRefused

from app import create_app
from tasks.core.events import EventType
from tests.support import Api, LiveServer, Socket, kept, wait_for


def echo(value: Any, **step: Any) -> dict[str, Any]:
    return {"type": "echo", "parameters": {"value": value}, **step}


def sleep(seconds: float, **step: Any) -> dict[str, Any]:
    return {"type": "sleep", "parameters": {"seconds": seconds}, **step}


def ended(workflow_id: str) -> Any:
    return lambda m: m.get("type") == EventType.WORKFLOW_COMPLETED and \
        m.get("workflow_id") == workflow_id


def stored(api: Api, workflow_id: str) -> list[dict[str, Any]]:
    response = api.request("GET", f"/api/workflows/{workflow_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


@pytest.fixture
def sockets(live_server: LiveServer) -> Iterator[Any]:
    opened: list[Socket] = []

    def connect(key: str | None = "key-tenant-a", url: str = live_server.url) -> Socket:
        opened.append(Socket(url, key))
        return opened[-1]

    yield connect
    for sock in opened:
        sock.close()


def test_a_bad_or_missing_key_is_refused_at_the_handshake(live_server: LiveServer) -> None:
    for key in ("not-a-key", None):
        with pytest.raises(HandshakeRefused) as refused:
            Socket(live_server.url, key)
        assert refused.value.status_code == 401


def test_an_upgrade_that_is_not_a_websocket_handshake_is_a_400(live_server: LiveServer) -> None:
    upgrade = {"x-api-key": "key-tenant-a", "Connection": "Upgrade", "Upgrade": "websocket"}
    for headers in (upgrade, {"x-api-key": "key-tenant-a"}):
        response = requests.get(f"{live_server.url}/ws", headers=headers, timeout=5)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_the_key_may_come_in_the_query_string(live_server: LiveServer, api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    ws = Client.connect(live_server.url.replace("http", "ws") + "/ws?api_key=key-tenant-a")
    try:
        ws.send(json.dumps({"action": "subscribe", "job_id": job_id, "since": "0"}))
        assert json.loads(ws.receive(timeout=10))["type"] == "subscribed"
        assert json.loads(ws.receive(timeout=10))["type"] == EventType.JOB_QUEUED
    finally:
        ws.close()


def test_every_event_of_a_workflow_arrives_in_order(api: Api, sockets: Any) -> None:
    # Given a chain whose middle step reports progress
    workflow_id, job_ids = api.create_workflow({"name": "chain", "steps": [
        echo("a"), sleep(0.6, depends_on=[0]), echo("c", depends_on=[1])]})
    sock = sockets()
    assert sock.subscribe(workflow_id=workflow_id, since="0") == {
        "type": "subscribed", "workflow_id": workflow_id, "since": "0"}
    # When it runs to the end
    events = sock.until(ended(workflow_id))
    # Then the socket carried exactly the stored history, ids strictly increasing
    assert kept(events) == stored(api, workflow_id)
    ids = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert ids == sorted(set(ids))
    # And each step went queued → started → progress… → completed, one after another
    steps = [[e["type"] for e in events if e["job_id"] == job] for job in job_ids]
    for types in steps:
        assert types[:2] == [EventType.JOB_QUEUED, EventType.JOB_STARTED]
        assert types[-1] == EventType.JOB_COMPLETED
        assert set(types[2:-1]) <= {EventType.JOB_PROGRESS}
    assert len(steps[1]) > 3, "the sleeping step reported progress"
    position = {(e["job_id"], e["type"]): n for n, e in enumerate(events)}
    for before, after in itertools.pairwise(job_ids):
        assert position[(before, EventType.JOB_COMPLETED)] < position[(after, EventType.JOB_QUEUED)]
    assert events[0]["type"] == EventType.JOB_QUEUED
    assert [e["type"] for e in events if e["job_id"] is None] == [
        EventType.WORKFLOW_STARTED, EventType.WORKFLOW_COMPLETED]
    assert position[(job_ids[0], EventType.JOB_STARTED)] > next(
        n for n, e in enumerate(events) if e["type"] == EventType.WORKFLOW_STARTED)


def test_events_have_the_stable_schema(api: Api, sockets: Any) -> None:
    workflow_id, job_ids = api.create_workflow({"name": "one", "steps": [echo(7)]})
    sock = sockets()
    sock.subscribe(workflow_id=workflow_id, since="0")
    events = sock.until(ended(workflow_id))
    completed = next(e for e in events if e["type"] == EventType.JOB_COMPLETED)
    assert list(completed) == ["id", "type", "ts", "tenant", "job_id", "workflow_id",
                               "step_index", "correlation_id", "worker", "data"]
    assert completed["tenant"] == "tenant-a" and completed["job_id"] == job_ids[0]
    assert completed["workflow_id"] == workflow_id and completed["step_index"] == 0
    assert completed["worker"] and completed["correlation_id"]
    assert completed["data"] == {"result": {"value": 7}}
    assert completed["ts"].endswith("Z") and len(completed["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_a_saga_is_watched_live_step_by_step(api: Api, sockets: Any) -> None:
    # Given a subscriber to a workflow whose last step fails
    workflow_id, _ = api.create_workflow({"name": "undo", "steps": [
        echo("a"), echo("b", depends_on=[0]), {"type": "fail", "depends_on": [1]}]})
    sock = sockets()
    sock.subscribe(workflow_id=workflow_id, since="0")
    # Then it sees the saga begin, undo each step, and end, as stored
    events = sock.until(lambda m: m.get("type") == EventType.WORKFLOW_COMPENSATED)
    assert events == stored(api, workflow_id)
    saga = [(e["type"], e["step_index"]) for e in events
            if e["type"].startswith(("workflow.compensat", "step."))]
    assert saga == [(EventType.WORKFLOW_COMPENSATING, None), (EventType.STEP_COMPENSATED, 1),
                    (EventType.STEP_COMPENSATED, 0), (EventType.WORKFLOW_COMPENSATED, None)]


def test_a_client_that_drops_mid_workflow_resumes_with_exactly_the_stored_history(
        api: Api, sockets: Any) -> None:
    workflow_id, _job_ids = api.create_workflow({"name": "resume", "steps": [
        sleep(0.5), sleep(0.5, depends_on=[0]), sleep(0.5, depends_on=[1])]})
    first = sockets()
    first.subscribe(workflow_id=workflow_id, since="0")
    # The client drops once the first step completed
    before = first.until(lambda m: m.get("type") == EventType.JOB_COMPLETED)
    first.close()
    time.sleep(0.4)  # events go on while nobody listens
    # And comes back with the last id it saw
    second = sockets()
    second.subscribe(workflow_id=workflow_id, since=before[-1]["id"])
    after = second.until(ended(workflow_id))
    assert kept(before + after) == stored(api, workflow_id)


def test_a_live_subscription_without_since_gets_only_new_events(api: Api, sockets: Any) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    api.wait(job_id)
    sock = sockets()
    sock.subscribe(job_id=job_id)
    assert sock.silent_for(0.5)


def test_another_tenant_receives_nothing_and_cannot_subscribe(api: Api, sockets: Any) -> None:
    workflow_id, job_ids = api.create_workflow({"name": "private", "steps": [
        echo(1), echo(2, depends_on=[0])]})
    other = sockets("key-tenant-b")
    assert other.subscribe(workflow_id=workflow_id)["code"] == "WORKFLOW_NOT_FOUND"
    assert other.subscribe(job_id=job_ids[0], since="0")["code"] == "JOB_NOT_FOUND"
    assert other.subscribe(all=True)["code"] == "FORBIDDEN"
    owner = sockets()
    owner.subscribe(workflow_id=workflow_id, since="0")
    owner.until(ended(workflow_id))
    assert other.silent_for(0.5)


def test_an_operator_follows_everything(api: Api, api_b: Api, sockets: Any) -> None:
    operator = sockets("key-operator")
    assert operator.subscribe(all=True)["type"] == "subscribed"
    job_a = api.submit_ok({"type": "echo", "parameters": {"value": "a"}})
    job_b = api_b.submit_ok({"type": "echo", "parameters": {"value": "b"}})
    done: set[str] = set()
    operator.until(lambda m: m.get("type") == EventType.JOB_COMPLETED and
                   (done.add(m["job_id"]) or {job_a, job_b} <= done))


@pytest.mark.parametrize("message, code", [
    ("not json", "INVALID_JSON"),
    ({"action": "dance", "job_id": "x"}, "INVALID_MESSAGE"),
    ({"action": "subscribe"}, "INVALID_MESSAGE"),
    ({"action": "subscribe", "job_id": "a", "workflow_id": "b"}, "INVALID_MESSAGE"),
    ({"action": "subscribe", "job_id": "a", "since": "yesterday"}, "INVALID_MESSAGE"),
    ({"action": "subscribe", "job_id": "no-such-job"}, "JOB_NOT_FOUND"),
])
def test_bad_messages_get_an_error_and_the_socket_stays_open(
        api: Api, sockets: Any, message: Any, code: str) -> None:
    sock = sockets()
    sock.ws.send(message if isinstance(message, str) else json.dumps(message))
    reply = sock.next()
    assert reply["type"] == "error" and reply["code"] == code and reply["message"]
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    assert sock.subscribe(job_id=job_id, since="0")["type"] == "subscribed"


def test_unsubscribe_stops_the_events(api: Api, sockets: Any) -> None:
    job_id = api.submit_ok({"type": "sleep", "parameters": {"seconds": 1.0}})
    sock = sockets()
    sock.subscribe(job_id=job_id)
    sock.send({"action": "unsubscribe", "job_id": job_id})
    replies = sock.until(lambda m: m["type"] == "unsubscribed")
    api.wait(job_id)
    assert sock.silent_for(0.3)
    assert all(m["type"] != EventType.JOB_COMPLETED for m in replies)


class StalledClient:
    """A WebSocket client that stops reading: a tiny receive buffer, a raw socket."""

    def __init__(self, base_url: str, key: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock.sendall(self.conn.send(wsproto.events.Request(
            host=host, target="/ws", extra_headers=[(b"x-api-key", key.encode())])))
        self._read_until(wsproto.events.AcceptConnection)

    def subscribe_everything(self) -> None:
        self.sock.sendall(self.conn.send(wsproto.events.TextMessage(
            json.dumps({"action": "subscribe", "all": True}))))

    def _read_until(self, kind: type) -> Any:
        while True:
            self.conn.receive_data(self.sock.recv(65536) or None)
            for event in self.conn.events():
                if isinstance(event, kind):
                    return event

    def close_code(self, timeout: float = 30) -> int:
        """Read everything that was queued for it, up to the server's close frame."""
        self.sock.settimeout(timeout)
        event = self._read_until(wsproto.events.CloseConnection)
        self.sock.close()
        return int(event.code)


@pytest.fixture
def small_queue_server(app: Flask) -> Iterator[LiveServer]:
    """A second API process whose sockets may hold only 32 unsent events (and whose
    pings do not close the stalled client first: it cannot answer them). The fast
    client reads in this same busy process, so it needs some slack on 2 cores; the
    stalled one is sent about a megabyte, far past the queue and the socket buffers."""
    settings = dict(app.extensions["chordline"].settings.__dict__, ws_queue_size=32,
                    ws_ping_interval=300.0)
    second = create_app(settings)
    server = LiveServer(second).start()
    yield server
    server.stop()
    second.extensions["event_hub"].stop()


def test_a_slow_client_is_closed_with_1013_and_does_not_delay_a_fast_one(
        small_queue_server: LiveServer, api: Api, sockets: Any) -> None:
    stalled = StalledClient(small_queue_server.url, "key-operator")
    stalled.subscribe_everything()
    fast = sockets("key-operator", small_queue_server.url)
    assert fast.subscribe(all=True)["type"] == "subscribed"
    # While the stalled client reads nothing, hundreds of events flow
    job_ids = {api.submit_ok({"type": "echo", "parameters": {"value": "x" * 1000}})
               for _ in range(300)}
    completed: set[str] = set()
    fast.until(lambda m: m.get("type") == EventType.JOB_COMPLETED and
               (completed.add(m["job_id"]) or job_ids <= completed), timeout=120)
    # Then the fast client got every one, and the stalled one is told to come back later
    assert stalled.close_code() == 1013
    assert wait_for(lambda: fast.silent_for(0.2), 5)
