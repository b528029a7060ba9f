"""One run, told the same way by every reader: what was published live is what the
history endpoints, the global log, WebSocket replay and the stats answer afterwards.

Before events were kept once (in their records, the global log referring to them),
each was stored exactly as it was published; so the live feed of a run is the answer
the old layout gave for it. The one difference is deliberate and documented: a
finished job keeps only its last progress event (tests/support.py `kept`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks.core.events import EventLog
from tests.support import TERMINAL, Api, EventTap, LiveServer, Socket, kept, wait_for

TENANT = "tenant-b"
JOBS = [
    {"type": "echo", "parameters": {"value": 1}},
    {"type": "text-to-image", "prompt": "a lighthouse at dusk",
     "parameters": {"width": 64, "height": 64, "steps": 4}},
    {"type": "flaky", "parameters": {"fail_times": 1}, "retries": 2},
]
COMPLETES = {"name": "completes", "steps": [
    {"type": "echo", "parameters": {"value": 1}},
    {"type": "sleep", "parameters": {"seconds": 0.4}, "depends_on": [0]}]}
COMPENSATES = {"name": "compensates", "steps": [
    {"type": "echo", "parameters": {"value": 0}},
    {"type": "echo", "parameters": {"value": 1}, "depends_on": [0]},
    {"type": "fail", "parameters": {"message": "broke"}, "depends_on": [1], "retries": 0}]}


@pytest.fixture
def tenant_b(live_server: LiveServer, api: Api) -> Api:
    """Tenant B's client, once none of its jobs is still on its way."""
    client = Api(live_server.url, "key-tenant-b")
    wait_for(lambda: not any(client.request("GET", "/api/jobs/stats").json()["stats"][s]
                             for s in ("pending", "waiting", "running")), 60)
    return client


@pytest.fixture
def run(tenant_b: Api, live_server: LiveServer, stack_env: dict[str, str]) -> Iterator[
        dict[str, Any]]:
    """Submit the jobs and workflows, wait for every one to end, and say what was seen."""
    client = redis.Redis.from_url(stack_env["REDIS_URL"], decode_responses=True)
    tap = EventTap(client)
    # Read after the tap listens: every event after this id was published to it.
    start = EventLog(client).last_id(("all", "*"))
    before = tenant_b.request("GET", "/api/jobs/stats").json()["stats"]
    jobs = [tenant_b.submit_ok(body) for body in JOBS]
    workflows = [tenant_b.create_workflow(body) for body in (COMPLETES, COMPENSATES)]
    for job_id in jobs:
        tenant_b.wait(job_id, TERMINAL, timeout=60)
    for workflow_id, _ in workflows:
        tenant_b.wait_workflow(workflow_id, {"completed", "compensated"}, timeout=60)
    wait_for(lambda: sum(e["type"] == "workflow.compensated" for e in tap.events) == 1, 10)
    tap.close()
    client.close()
    live = [e for e in tap.events if _after(e["id"], start)]
    yield {"jobs": jobs, "workflows": workflows, "live": live, "start": start,
           "before": before}


def _after(event_id: str, since: str) -> bool:
    def pair(text: str) -> tuple[int, int]:
        ms, _, seq = text.partition("-")
        return int(ms), int(seq or 0)
    return pair(event_id) > pair(since)


def pages(api: Api, path: str, since: str = "0", limit: int = 4) -> list[dict[str, Any]]:
    """Every event of a history endpoint, page after page as a client follows them."""
    events: list[dict[str, Any]] = []
    while True:
        body = api.request("GET", path, params={"since": since, "limit": limit}).json()
        events += body["events"]
        if body["next_since"] is None:
            return events
        since = body["next_since"]


def test_every_reader_tells_the_run_as_it_was_published(
        run: dict[str, Any], tenant_b: Api, live_server: LiveServer) -> None:
    live = kept(run["live"])
    assert {"job.progress", "job.retrying", "step.compensated",
            "workflow.completed"} <= {e["type"] for e in live}
    subjects = [("job", j) for j in run["jobs"]] + [("workflow", w) for w, _ in run["workflows"]]
    for kind, ident in subjects:
        told = [e for e in live if e[f"{kind}_id"] == ident]
        path = f"/api/{kind}s/{ident}/events"
        assert pages(tenant_b, path) == told, (kind, ident)
        # Resuming after any event gives exactly what follows it.
        middle = told[len(told) // 2]["id"]
        assert tenant_b.request("GET", path, params={"since": middle}).json()["events"] == \
            told[len(told) // 2 + 1:]
        socket = Socket(live_server.url, "key-tenant-b")
        try:
            assert socket.subscribe(**{f"{kind}_id": ident}, since="0")["type"] == "subscribed"
            replayed = socket.until(lambda m: m.get("id") == told[-1]["id"])  # noqa: B023
        finally:
            socket.close()
        assert replayed == told, (kind, ident)
    operator = Api(live_server.url, "key-operator")
    assert pages(operator, "/api/events", since=run["start"], limit=7) == live
    operators_socket = Socket(live_server.url, "key-operator")
    try:
        assert operators_socket.subscribe(all=True, since=run["start"])["type"] == "subscribed"
        assert operators_socket.until(lambda m: m.get("id") == live[-1]["id"]) == live
    finally:
        operators_socket.close()


def test_the_stats_count_the_runs_records(run: dict[str, Any], tenant_b: Api) -> None:
    after = tenant_b.request("GET", "/api/jobs/stats").json()["stats"]
    steps = sum(len(job_ids) for _, job_ids in run["workflows"])
    assert after["total"] - run["before"]["total"] == len(run["jobs"]) + steps
    finals = [tenant_b.job(j)["status"] for _, ids in run["workflows"] for j in ids]
    finals += [tenant_b.job(j)["status"] for j in run["jobs"]]
    for status in ("completed", "failed", "compensated", "cancelled"):
        assert after[status] - run["before"].get(status, 0) == finals.count(status), status
    for job_type, count in {"echo": 4, "text-to-image": 1, "flaky": 1, "sleep": 1,
                            "fail": 1}.items():
        assert after["by_type"][job_type] - run["before"]["by_type"].get(job_type, 0) == \
            count, job_type
