"""Event history over HTTP: a job's, a workflow's, and every event for operators."""

from __future__ import annotations

from tasks.core.events import EventType
from tests.support import Api


def test_a_jobs_history_matches_its_status(api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 3}})
    job = api.wait(job_id)
    response = api.request("GET", f"/api/jobs/{job_id}/events")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["next_since"] is None
    assert [e["type"] for e in body["events"]] == [
        EventType.JOB_QUEUED, EventType.JOB_STARTED, EventType.JOB_COMPLETED]
    assert body["events"][-1]["data"]["result"] == job["result"]
    assert body["events"][-1]["ts"] == job["completed_at"]


def test_history_pages_with_since_and_limit(api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 3}})
    api.wait(job_id)
    everything = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    first = api.request("GET", f"/api/jobs/{job_id}/events", params={"limit": 2}).json()
    assert first["events"] == everything[:2] and first["next_since"] == everything[1]["id"]
    rest = api.request("GET", f"/api/jobs/{job_id}/events",
                       params={"since": first["next_since"]}).json()
    assert rest["events"] == everything[2:] and rest["next_since"] is None


def test_a_workflows_history_holds_its_steps_events(api: Api) -> None:
    workflow_id, job_ids = api.create_workflow({"name": "h", "steps": [
        {"type": "echo", "parameters": {"value": 1}},
        {"type": "echo", "parameters": {"value": 2}, "depends_on": [0]}]})
    api.wait_workflow(workflow_id)
    events = api.request("GET", f"/api/workflows/{workflow_id}/events").json()["events"]
    assert {e["job_id"] for e in events} == {*job_ids, None}
    assert events[-1]["type"] == EventType.WORKFLOW_COMPLETED
    assert {e["step_index"] for e in events if e["job_id"]} == {0, 1}


def test_another_tenants_history_is_not_found(api: Api, api_b: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 3}})
    response = api_b.request("GET", f"/api/jobs/{job_id}/events")
    assert response.status_code == 404 and response.json()["error"]["code"] == "JOB_NOT_FOUND"
    response = api_b.request("GET", "/api/workflows/nope/events")
    assert response.json()["error"]["code"] == "WORKFLOW_NOT_FOUND"


def test_a_bad_since_or_limit_is_a_400(api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 3}})
    for params in ({"since": "yesterday"}, {"limit": 0}, {"limit": "many"}):
        response = api.request("GET", f"/api/jobs/{job_id}/events", params=params)
        assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_QUERY"


def test_operators_read_every_event_since_an_id(live_server: object, api: Api) -> None:
    operator = Api(api.base_url, "key-operator")
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 3}})
    api.wait(job_id)
    own = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    response = operator.request("GET", "/api/events", params={"since": own[0]["id"]})
    after = response.json()["events"]
    assert [e for e in after if e["job_id"] == job_id] == own[1:]
    forbidden = api.request("GET", "/api/events")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"
