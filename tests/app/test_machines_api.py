"""The machine routes' contract and the requirements a job may ask for, over real HTTP."""

from __future__ import annotations

import pytest

from tasks.core.events import EventType
from tests.support import Api, wait_for


@pytest.fixture
def operator(live_server: object, api: Api) -> Api:
    return Api(api.base_url, "key-operator")


def test_the_session_node_describes_itself(operator: Api, api: Api) -> None:
    machines = operator.request("GET", "/api/machines").json()["machines"]
    [node] = [m for m in machines if m["status"] == "online"]
    assert node["gpus"] == [] and node["gpu_job_types"] == []
    assert {"text-to-image", "upscale", "echo"} <= set(node["job_types"])
    assert "simulate" not in node["job_types"], "a CPU-only node serves no GPU handler"
    assert len(node["workers"]) == 1 and node["detected_by"] == "declared"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/machines"), ("GET", "/api/machines/x"), ("POST", "/api/machines"),
    ("POST", "/api/machines/x/drain"), ("POST", "/api/machines/x/resume"),
])
def test_machine_routes_are_for_operators(api: Api, anonymous: Api, method: str,
                                          path: str) -> None:
    refused = api.request(method, path, json={"id": "x"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert anonymous.request(method, path).status_code == 401


def test_an_operator_registers_drains_and_resumes_a_machine(operator: Api) -> None:
    created = operator.request("POST", "/api/machines",
                               json={"id": "pre-1", "labels": {"zone": "eu"}})
    assert created.status_code == 201
    machine = created.json()["machine"]
    assert (machine["id"], machine["status"], machine["labels"]) == ("pre-1", "offline",
                                                                     {"zone": "eu"})
    again = operator.request("POST", "/api/machines", json={"id": "pre-1", "labels": {}})
    assert again.status_code == 200 and again.json()["machine"]["labels"] == {}
    assert operator.request("POST", "/api/machines/pre-1/drain").status_code == 200
    assert operator.request("POST", "/api/machines/pre-1/resume").status_code == 200
    types = wait_for(lambda: [e["type"] for e in operator.request("GET", "/api/events").json()[
        "events"] if e["data"].get("machine_id") == "pre-1"], 5)
    assert types == [EventType.MACHINE_DRAINING]  # resuming an offline machine changes no status


@pytest.mark.parametrize(("body", "message"), [
    ({}, "Machine id is required"),
    ({"id": "a:b"}, "id: must be 1-128 letters"),
    ({"id": "ok", "labels": {"bad key!": "x"}}, "label names are"),
    ({"id": "ok", "labels": {"k": "v" * 64}}, "label values are"),
])
def test_a_bad_registration_is_a_400(operator: Api, body: dict[str, object],
                                     message: str) -> None:
    response = operator.request("POST", "/api/machines", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "MACHINE_REGISTRATION_FAILED" and message in error["message"]


@pytest.mark.parametrize("machine_id", ["nope", "a:b", "x" * 200])
def test_an_unknown_or_malformed_machine_is_a_404(operator: Api, machine_id: str) -> None:
    for method, path in (("GET", f"/api/machines/{machine_id}"),
                         ("POST", f"/api/machines/{machine_id}/drain")):
        response = operator.request(method, path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "MACHINE_NOT_FOUND"


@pytest.mark.parametrize(("requirements", "message"), [
    ({"gpu_memory": 0}, "GPU memory must be between 1 and 4096 GB"),
    ({"gpu_memory": "8"}, "requirements.gpu_memory: Not a valid integer"),
    ({"model": "../etc"}, "requirements.model: must be 1-100 letters"),
    ({"labels": {"zone": "e u"}}, "label values are"),
    ({"labels": {str(i): "x" for i in range(17)}}, "at most 16 labels"),
    ({"color": "red"}, "requirements.color: Unknown field"),
])
def test_bad_requirements_are_refused_for_jobs_and_steps(
        api: Api, requirements: dict[str, object], message: str) -> None:
    job = api.submit({"type": "echo", "requirements": requirements})
    assert job.status_code == 400 and job.json()["error"]["code"] == "JOB_SUBMISSION_FAILED"
    assert message in job.json()["error"]["message"]
    workflow = api.request("POST", "/api/workflows", json={"name": "w", "steps": [
        {"type": "echo", "requirements": requirements}]})
    assert workflow.status_code == 400
    assert workflow.json()["error"]["code"] == "WORKFLOW_CREATION_FAILED"


def test_requirements_raise_what_the_handler_needs_never_lower_it(api: Api) -> None:
    raised = api.job(api.submit_ok({"type": "text-to-image", "prompt": "fox",
                                    "requirements": {"gpu_memory": 20, "labels": {"a": "b"}}}))
    assert raised["requirements"]["gpu_memory"] == 20
    assert raised["requirements"]["labels"] == {"a": "b"}
    kept = api.job(api.submit_ok({"type": "text-to-image", "prompt": "fox",
                                  "requirements": {"gpu_memory": 2}}))
    assert kept["requirements"]["gpu_memory"] == 8



def test_a_job_no_node_serves_waits_and_says_why(api: Api) -> None:
    job = api.job(api.submit_ok({"type": "echo", "requirements": {"labels": {"zone": "mars"}}}))
    assert job["status"] == "pending"
    assert job["waiting_reason"] == "no online machine has labels zone=mars"
    api.request("POST", f"/api/jobs/{job['id']}/cancel")


def test_a_model_the_fleet_does_not_know_is_a_400(api: Api) -> None:
    unknown = api.submit({"type": "simulate", "parameters": {"model": "nowhere"}})
    assert unknown.status_code == 400
    # (Which models the fleet has depends on the nodes earlier tests of the session started.)
    assert "unknown model nowhere for simulate jobs (the fleet has: " in unknown.json()[
        "error"]["message"]
