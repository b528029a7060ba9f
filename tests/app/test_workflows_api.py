"""The workflow API over real HTTP, against a real Redis and a real worker."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from tests.support import Api, wait_for


def sleep(seconds: float, **step: Any) -> dict[str, Any]:
    return {"type": "sleep", "parameters": {"seconds": seconds}, **step}


def echo(value: Any, **step: Any) -> dict[str, Any]:
    return {"type": "echo", "parameters": {"value": value}, **step}


def test_a_workflow_answers_its_id_and_one_job_per_step_in_order(api: Api) -> None:
    response = api.request("POST", "/api/workflows", json={
        "name": "pair", "description": "two steps", "steps": [echo(1), echo(2, depends_on=[0])]})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and len(body["job_ids"]) == 2
    status = api.wait_workflow(body["workflow_id"])
    assert [s["job_id"] for s in status["steps"]] == body["job_ids"]
    assert [s["step_index"] for s in status["steps"]] == [0, 1]
    assert [s["result"] for s in status["steps"]] == [{"value": 1}, {"value": 2}]


def test_the_status_has_the_seed_shape(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "shape", "steps": [echo(1)]})
    status = api.wait_workflow(workflow_id)
    assert set(status["workflow"]) >= {
        "id", "name", "description", "status", "total_steps", "completed_steps",
        "progress_percentage", "created_at", "completed_at"}
    assert set(status["steps"][0]) >= {"step_index", "job_id", "status", "progress", "result",
                                       "error", "started_at", "completed_at"}
    assert status["workflow"] | {"id": None, "created_at": None, "completed_at": None,
                                 "started_at": None, "correlation_id": None} == {
        "id": None, "name": "shape", "description": None, "status": "completed",
        "total_steps": 1, "completed_steps": 1, "progress_percentage": 100.0,
        "created_at": None, "started_at": None, "completed_at": None, "error": None,
        "correlation_id": None, "compensation_started_at": None, "compensation_error": None}


def test_steps_run_in_dependency_order_with_parallel_branches(api: Api) -> None:
    # Given a diamond: 0 → (1, 2) → 3, where 1 and 2 each take 0.5 s
    workflow_id, _ = api.create_workflow({"name": "diamond", "steps": [
        echo("a"), sleep(0.5, depends_on=[0]), sleep(0.5, depends_on=[0]),
        echo("d", depends_on=[1, 2])]})
    # Then every step ran once, after its dependencies, and 1 and 2 overlapped
    steps = api.wait_workflow(workflow_id)["steps"]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in steps)
    assert steps[1]["started_at"] >= steps[0]["completed_at"]
    assert steps[3]["started_at"] >= max(steps[1]["completed_at"], steps[2]["completed_at"])
    assert steps[2]["started_at"] < steps[1]["completed_at"]


def test_waiting_steps_show_as_waiting_then_pending(api: Api) -> None:
    workflow_id, job_ids = api.create_workflow({"name": "wait", "steps": [
        sleep(1.5), echo(1, depends_on=[0])]})
    status = api.workflow(workflow_id)
    assert status["steps"][1]["status"] == "waiting"
    assert status["workflow"]["status"] in {"pending", "running"}
    assert api.job(job_ids[1])["status"] == "waiting"
    wait_for(lambda: api.workflow(workflow_id)["workflow"]["status"] == "running", 10,
             message="the workflow to start")
    assert api.wait_workflow(workflow_id)["workflow"]["status"] == "completed"


def test_progress_follows_the_steps(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "progress", "steps": [
        echo(1), sleep(2, depends_on=[0])]})
    midway = wait_for(lambda: (w := api.workflow(workflow_id)["workflow"])[
        "progress_percentage"] > 55 and w, 10, message="progress past the first step")
    assert midway["completed_steps"] == 1 and midway["progress_percentage"] < 100
    done = api.wait_workflow(workflow_id)["workflow"]
    assert (done["completed_steps"], done["progress_percentage"]) == (2, 100.0)


def test_text_to_image_then_upscale_downloads_twice_the_size(api: Api) -> None:
    # Given the README's example: an upscale step with no image_url of its own
    workflow_id, job_ids = api.create_workflow({"name": "poster", "steps": [
        {"type": "text-to-image", "prompt": "a lighthouse at dusk",
         "parameters": {"width": 256, "height": 192, "steps": 4}},
        {"type": "upscale", "parameters": {"scale_factor": 2}, "depends_on": [0]}]})
    # Then the upscale takes the generated image, and its output is twice as big
    steps = api.wait_workflow(workflow_id)["steps"]
    assert [s["status"] for s in steps] == ["completed", "completed"]
    upscaled = steps[1]["result"]["artifacts"][0]
    assert (upscaled["width"], upscaled["height"]) == (512, 384)
    image = api.request("GET", upscaled["url"])
    assert image.status_code == 200
    with Image.open(__import__("io").BytesIO(image.content)) as picture:
        assert picture.size == (512, 384)
    assert api.job(job_ids[1])["parameters"]["scale_factor"] == 2


def test_a_false_condition_skips_the_step_and_its_dependents_still_run(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "conditional", "steps": [
        echo({"nsfw": False, "score": 3}),
        echo("flagged", depends_on=[0],
             when={"step": 0, "path": "result.value.nsfw", "op": "eq", "value": True}),
        echo("good", depends_on=[0],
             when=[{"step": 0, "path": "result.value.score", "op": "gte", "value": 3},
                   {"step": 0, "path": "status", "op": "eq", "value": "completed"}]),
        echo("after", depends_on=[1, 2])]})
    status = api.wait_workflow(workflow_id)
    assert [s["status"] for s in status["steps"]] == [
        "completed", "skipped", "completed", "completed"]
    assert "step 0 result.value.nsfw eq True" in status["steps"][1]["result"]["reason"]
    assert status["workflow"]["status"] == "completed"
    assert status["workflow"]["progress_percentage"] == 100.0


def test_a_failed_step_undoes_the_completed_ones_and_cancels_what_depends_on_it(
        api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "failing", "steps": [
        echo(1), {"type": "fail", "parameters": {"message": "boom"}, "depends_on": [0]},
        echo(3, depends_on=[1]), echo(4, depends_on=[2])]})
    status = api.wait_workflow(workflow_id)
    assert status["workflow"]["status"] == "compensated"
    assert status["workflow"]["error"]["code"] == "STEP_FAILED"
    assert "Step 1 failed: boom" in status["workflow"]["error"]["message"]
    assert [s["status"] for s in status["steps"]] == ["compensated", "failed", "cancelled",
                                                      "cancelled"]
    assert status["steps"][0]["compensation_attempts"] == 1
    assert all(s["attempts"] == 0 for s in status["steps"][2:])


def test_a_step_retries_with_backoff_before_its_dependents_run(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "flaky", "steps": [
        {"type": "flaky", "parameters": {"fail_times": 1}, "retries": 2}, echo(2, depends_on=[0])]})
    steps = api.wait_workflow(workflow_id, timeout=30)["steps"]
    assert [s["status"] for s in steps] == ["completed", "completed"]
    assert steps[0]["attempts"] == 2 and steps[1]["attempts"] == 1
    assert steps[1]["started_at"] >= steps[0]["completed_at"]


def test_a_step_that_times_out_fails_with_job_timeout(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "slow", "steps": [
        sleep(10, timeout_seconds=1), echo(1, depends_on=[0])]})
    status = api.wait_workflow(workflow_id, timeout=30)
    assert status["steps"][0]["error"]["code"] == "JOB_TIMEOUT"
    assert [s["status"] for s in status["steps"]] == ["failed", "cancelled"]


def test_cancel_stops_every_step_that_has_not_started(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "cancel", "steps": [
        sleep(1.5), echo(1, depends_on=[0]), echo(2, depends_on=[1])]})
    wait_for(lambda: api.workflow(workflow_id)["steps"][0]["status"] == "running", 10,
             message="the first step to run")
    response = api.request("POST", f"/api/workflows/{workflow_id}/cancel",
                           json={"reason": "changed my mind"})
    assert response.status_code == 200
    assert response.json()["message"] == "Workflow cancelled (2/3 jobs cancelled)"
    # The running step finishes; nothing after it starts
    wait_for(lambda: api.workflow(workflow_id)["steps"][0]["status"] == "completed", 10,
             message="the running step to finish")
    steps = api.workflow(workflow_id)["steps"]
    assert [s["status"] for s in steps] == ["completed", "cancelled", "cancelled"]
    assert steps[1]["error"] == {**steps[1]["error"], "code": "WORKFLOW_CANCELLED",
                                 "message": "changed my mind"}
    assert api.workflow(workflow_id)["workflow"]["status"] == "cancelled"


def test_cancel_with_terminate_stops_running_steps(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "terminate", "steps": [
        sleep(30), echo(1, depends_on=[0])]})
    wait_for(lambda: api.workflow(workflow_id)["steps"][0]["status"] == "running", 10,
             message="the first step to run")
    response = api.request("POST", f"/api/workflows/{workflow_id}/cancel",
                           json={"terminate": True})
    assert response.json() | {"message": None} == {
        "success": True, "message": None, "status": "cancelled", "cancelled_jobs": 2,
        "terminated_jobs": 1}
    steps = api.workflow(workflow_id)["steps"]
    assert [s["status"] for s in steps] == ["cancelled", "cancelled"]


def test_cancel_with_compensate_stops_the_running_step_and_undoes_the_completed_one(
        api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "undo", "steps": [
        echo(0), sleep(30, depends_on=[0]), echo(2, depends_on=[1])]})
    wait_for(lambda: api.workflow(workflow_id)["steps"][1]["status"] == "running", 10,
             message="the second step to run")
    response = api.request("POST", f"/api/workflows/{workflow_id}/cancel",
                           json={"reason": "wrong prompt", "compensate": True})
    assert response.status_code == 200
    assert response.json()["status"] == "compensating"
    status = api.wait_workflow(workflow_id, timeout=20)
    assert status["workflow"]["status"] == "compensated"
    assert status["workflow"]["error"]["code"] == "WORKFLOW_CANCELLED"
    assert [s["status"] for s in status["steps"]] == ["compensated", "cancelled", "cancelled"]
    assert status["steps"][1]["error"]["code"] == "STEP_STOPPED"
    assert status["steps"][0]["compensated_at"] >= status["workflow"]["compensation_started_at"]
    types = [e["type"] for e in api.request(
        "GET", f"/api/workflows/{workflow_id}/events").json()["events"]]
    assert types[-2:] == ["step.compensated", "workflow.compensated"]


def test_compensated_images_are_gone(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "images", "steps": [
        {"type": "text-to-image", "prompt": "a lighthouse",
         "parameters": {"width": 64, "height": 64, "steps": 1, "seed": 7}},
        {"type": "upscale", "parameters": {"scale_factor": 2}, "depends_on": [0]},
        {"type": "fail", "depends_on": [1]}]})
    status = api.wait_workflow(workflow_id, timeout=30)
    assert status["workflow"]["status"] == "compensated"
    urls = [a["url"] for step in status["steps"][:2] for a in step["result"]["artifacts"]]
    assert len(urls) == 2
    for url in urls:
        response = api.request("GET", url)
        assert (response.status_code, response.json()["error"]["code"]) == (
            404, "ARTIFACT_NOT_FOUND")
    undone = [e for e in api.request("GET", f"/api/workflows/{workflow_id}/events").json()[
        "events"] if e["type"] == "step.compensated"]
    assert [(e["step_index"], e["data"]["result"]) for e in undone] == [
        (1, {"deleted_artifacts": 1}), (0, {"deleted_artifacts": 1})]


def test_an_operator_retries_a_failed_compensation(api: Api, api_b: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "stuck", "steps": [
        echo(0, parameters={"value": 0, "compensation": "fail"}),
        {"type": "fail", "depends_on": [0]}]})
    status = api.wait_workflow(workflow_id, timeout=30)
    assert status["workflow"]["status"] == "compensation_failed"
    assert status["workflow"]["compensation_error"]["step_index"] == 0
    attempts = status["steps"][0]["compensation_attempts"]
    assert status["steps"][0]["compensation_error"]["attempt"] == attempts
    path = f"/api/workflows/{workflow_id}/compensate"
    assert api_b.request("POST", path).status_code == 404
    response = api.request("POST", path)
    assert (response.status_code, response.json()["status"]) == (202, "compensating")
    status = api.wait_workflow(workflow_id, timeout=30)
    assert status["workflow"]["status"] == "compensation_failed"
    assert status["steps"][0]["compensation_attempts"] == 2 * attempts


def test_only_unsuccessful_workflows_with_work_left_can_be_compensated(api: Api) -> None:
    done, _ = api.create_workflow({"name": "fine", "steps": [echo(0)]})
    api.wait_workflow(done)
    response = api.request("POST", f"/api/workflows/{done}/compensate")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "WORKFLOW_NOT_COMPENSABLE"
    assert "completed" in response.json()["error"]["message"]
    response = api.request("POST", "/api/workflows/no-such-workflow/compensate")
    assert (response.status_code, response.json()["error"]["code"]) == (
        404, "WORKFLOW_NOT_FOUND")


def test_a_finished_workflow_cannot_be_cancelled(api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "done", "steps": [echo(1)]})
    api.wait_workflow(workflow_id)
    response = api.request("POST", f"/api/workflows/{workflow_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "WORKFLOW_NOT_CANCELLABLE",
                                        "message": "Cannot cancel workflow in status: completed"}


def test_steps_are_jobs_but_are_cancelled_with_their_workflow(api: Api) -> None:
    workflow_id, job_ids = api.create_workflow({"name": "steps", "steps": [
        sleep(1), echo(1, depends_on=[0])]})
    job = api.job(job_ids[1])
    assert (job["workflow_id"], job["step_index"], job["type"]) == (workflow_id, 1, "echo")
    response = api.request("POST", f"/api/jobs/{job_ids[1]}/cancel")
    assert response.status_code == 409
    assert "cancel the workflow instead" in response.json()["error"]["message"]
    listed = api.request("GET", "/api/jobs", params={"type": "echo", "limit": 200}).json()
    assert job_ids[1] in [j["id"] for j in listed["jobs"]]
    api.wait_workflow(workflow_id)


@pytest.mark.parametrize(("body", "message"), [
    ({"steps": [{"type": "echo"}]}, "Workflow name is required"),
    ({"name": "  ", "steps": [{"type": "echo"}]}, "Workflow name is required"),
    ({"name": "x"}, "Workflow must have at least one step"),
    ({"name": "x", "steps": []}, "Workflow must have at least one step"),
    ({"name": "x", "steps": [{"type": "echo"}] * 51}, "Workflow cannot have more than 50 steps"),
    ({"name": "x", "steps": [{"type": "echo", "depends_on": [0]}]},
     "Step 0: cannot depend on future or self steps"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "echo", "depends_on": [-1]}]},
     "Step 1: invalid dependency index"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "warp-drive"}]},
     "Step 1: type: Unsupported job type: warp-drive"),
    ({"name": "x", "steps": [{"prompt": "no type"}]}, "Job type is required"),
    ({"name": "x", "steps": [{"type": "text-to-image"}]},
     "Step 0: prompt: Prompt is required for text-to-image jobs"),
    ({"name": "x", "steps": [{"type": "upscale"}]}, "Step 0: parameters.image_url"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "echo", "depends_on": [0], "when": {
        "step": 1, "path": "status", "op": "eq", "value": "completed"}}]},
     "Step 1: when refers to step 1, which is not among its dependencies"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "echo", "depends_on": [0], "when": {
        "step": 0, "path": "__class__", "op": "eq"}}]}, "path"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "echo", "depends_on": [0], "when": {
        "step": 0, "path": "status\n", "op": "eq"}}]}, "path"),
    ({"name": "x", "steps": [{"type": "echo"}, {"type": "echo", "depends_on": [0], "when": {
        "step": 0, "path": "status", "op": "matches"}}]}, "op"),
    ({"name": "x", "steps": "all of them"}, "steps"),
])
def test_invalid_workflows_are_refused_with_the_seed_code(
        api: Api, body: dict[str, Any], message: str) -> None:
    before = api.request("GET", "/api/workflows/stats").json()["stats"]["total"]
    response = api.request("POST", "/api/workflows", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "WORKFLOW_CREATION_FAILED"
    assert error["message"].startswith("Workflow validation failed: ")
    assert message in error["message"]
    assert api.request("GET", "/api/workflows/stats").json()["stats"]["total"] == before


def test_unknown_and_foreign_workflows_are_not_found(api: Api, api_b: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "mine", "steps": [echo(1)]})
    for client, wid in ((api, "no-such-workflow"), (api_b, workflow_id)):
        for method, path in (("GET", f"/api/workflows/{wid}/status"),
                             ("POST", f"/api/workflows/{wid}/cancel")):
            response = client.request(method, path)
            assert response.status_code == 404
            assert response.json()["error"] == {
                "code": "WORKFLOW_NOT_FOUND", "message": f"Workflow with ID {wid} not found"}
    assert workflow_id not in [w["id"] for w in api_b.request("GET", "/api/workflows").json()[
        "workflows"]]


def test_workflows_are_listed_newest_first_and_counted(api: Api) -> None:
    ids = [api.create_workflow({"name": f"list-{i}", "steps": [echo(i)]})[0] for i in range(3)]
    for workflow_id in ids:
        api.wait_workflow(workflow_id)
    first = api.request("GET", "/api/workflows", params={"limit": 2}).json()
    assert [w["id"] for w in first["workflows"]] == ids[::-1][:2]
    rest = api.request("GET", "/api/workflows",
                       params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert rest["workflows"][0]["id"] == ids[0]
    completed = api.request("GET", "/api/workflows", params={"status": "completed"}).json()
    assert set(ids) <= {w["id"] for w in completed["workflows"]}
    stats = api.request("GET", "/api/workflows/stats", params={"timeframe": "hour"}).json()
    assert stats["timeframe"] == "hour"
    assert stats["stats"]["completed"] >= 3
    assert stats["stats"]["total"] >= stats["stats"]["completed"]
    bad = api.request("GET", "/api/workflows/stats", params={"timeframe": "year"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "INVALID_TIMEFRAME")
    bad = api.request("GET", "/api/workflows", params={"status": "sleeping"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "INVALID_QUERY")
