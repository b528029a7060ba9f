"""The job API over real HTTP, against a real Redis and a real worker."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.support import Api, wait_for

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def png(response_content: bytes) -> Image.Image:
    return Image.open(io.BytesIO(response_content))


def test_text_to_image_runs_on_a_worker_and_its_png_downloads(api: Api) -> None:
    # Given a text-to-image submission
    response = api.submit({"type": "text-to-image", "prompt": "a red fox in snow",
                           "parameters": {"width": 320, "height": 192, "seed": 7}})
    # Then it is accepted with the seed's shape
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["status"] == "submitted"

    # When the worker has run it
    job = api.wait(body["job_id"])

    # Then the status carries the seed's fields and a downloadable PNG of the asked size
    assert job["status"] == "completed" and job["progress"] == 100
    assert job["type"] == "text-to-image" and job["worker_id"] and job["machine_id"]
    for stamp in ("created_at", "started_at", "completed_at"):
        assert ISO_MS.match(job[stamp]), job[stamp]
    assert job["requirements"] == {"gpu_memory": 8, "model_type": "stable-diffusion",
                                   "capabilities": ["text-to-image"]}
    (artifact,) = job["result"]["artifacts"]
    assert (artifact["width"], artifact["height"], artifact["content_type"]) == (
        320, 192, "image/png")
    download = api.request("GET", artifact["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert png(download.content).size == (320, 192)


def test_same_prompt_and_seed_give_the_same_pixels(api: Api) -> None:
    body = {"type": "text-to-image", "prompt": "lighthouse",
            "parameters": {"width": 64, "height": 64, "seed": 42, "steps": 5}}
    images = []
    for _ in range(2):
        job = api.wait(api.submit_ok(body))
        images.append(api.request("GET", job["result"]["artifacts"][0]["url"]).content)
    assert png(images[0]).tobytes() == png(images[1]).tobytes()


def test_a_missing_seed_is_chosen_at_submit_and_stored(api: Api) -> None:
    job = api.job(api.submit_ok({"type": "text-to-image", "prompt": "x",
                                 "parameters": {"width": 64, "height": 64}}))
    assert isinstance(job["parameters"]["seed"], int)


@pytest.mark.parametrize(("body", "message"), [
    ({}, "Job type is required"),
    ({"type": "paint-by-number"}, "Unsupported job type: paint-by-number"),
    ({"type": "text-to-image"}, "Prompt is required for text-to-image jobs"),
    ({"type": "text-to-image", "prompt": "   "}, "Prompt is required for text-to-image jobs"),
    ({"type": "echo", "priority": 101}, "Priority must be between 0 and 100"),
    ({"type": "echo", "priority": -1}, "Priority must be between 0 and 100"),
    ({"type": "echo", "depends_on": ["x"]},
     "workflow_id is required when depends_on is specified"),
    ({"type": "text-to-image", "prompt": "x", "parameters": {"width": 100000}},
     "parameters.width"),
    ({"type": "text-to-image", "prompt": "x", "parameters": {"width": 100}},
     "multiple of 8"),
    ({"type": "text-to-image", "prompt": "x", "parameters": {"colour": "red"}},
     "parameters.colour: Unknown field."),
    ({"type": "echo", "surprise": 1}, "surprise: Unknown field."),
    ({"type": "upscale", "parameters": {"image_url": "https://example.com/cat.png"}},
     "must reference one of your artifacts"),
    ({"type": "upscale", "parameters": {"image_url": "/api/artifacts/" + "0" * 32}},
     "was not found"),
    ({"type": "text-to-image", "prompt": "p" * 2001}, "Prompt must be at most 2000"),
    ({"type": "echo", "timeout_seconds": 0}, "timeout_seconds"),
    ({"type": "echo", "retries": 11}, "retries"),
])
def test_invalid_submissions_get_a_400_with_the_seeds_code(
        api: Api, body: dict[str, object], message: str) -> None:
    response = api.submit(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert response.json()["success"] is False
    assert error["code"] == "JOB_SUBMISSION_FAILED"
    assert error["message"].startswith("Job validation failed: ")
    assert message in error["message"]


def test_a_workflow_that_does_not_exist_is_a_404(api: Api) -> None:
    response = api.submit({"type": "echo", "workflow_id": "nope", "depends_on": ["a"]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "WORKFLOW_NOT_FOUND"


@pytest.mark.parametrize(("data", "code"), [
    (b"{not json", "INVALID_JSON"),
    (b"[1, 2]", "JOB_SUBMISSION_FAILED"),
    (b"", "INVALID_JSON"),
])
def test_malformed_bodies_are_400s(api: Api, data: bytes, code: str) -> None:
    response = api.request("POST", "/api/jobs/submit", data=data,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_a_body_over_one_mib_is_a_413(api: Api) -> None:
    response = api.request("POST", "/api/jobs/submit",
                           data=b'{"type": "echo", "prompt": "' + b"x" * (1 << 20) + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_rejected_submissions_leave_no_job_behind(api: Api) -> None:
    before = api.request("GET", "/api/jobs/stats").json()["stats"]["total"]
    api.submit({"type": "text-to-image"})
    assert api.request("GET", "/api/jobs/stats").json()["stats"]["total"] == before


def test_missing_or_wrong_api_key_is_a_401(anonymous: Api, live_server: object) -> None:
    for headers in ({}, {"x-api-key": "not-a-key"}):
        response = anonymous.request("GET", "/api/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


def test_another_tenants_job_and_artifacts_are_404(api: Api, api_b: Api) -> None:
    job = api.wait(api.submit_ok({"type": "text-to-image", "prompt": "mine",
                                  "parameters": {"width": 64, "height": 64}}))
    for method, path in (("GET", f"/api/jobs/{job['id']}/status"),
                         ("POST", f"/api/jobs/{job['id']}/cancel"),
                         ("GET", job["result"]["artifacts"][0]["url"])):
        response = api_b.request(method, path)
        assert response.status_code == 404, (method, path)
    listed = api_b.request("GET", "/api/jobs").json()["jobs"]
    assert job["id"] not in {j["id"] for j in listed}
    other = api_b.submit({"type": "upscale",
                          "parameters": {"image_url": job["result"]["artifacts"][0]["url"]}})
    assert other.status_code == 400


def test_an_operator_key_sees_every_tenant(api: Api, live_server: object) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    operator = Api(api.base_url, "key-operator")
    assert operator.job(job_id)["id"] == job_id


def test_unknown_job_is_a_404_with_the_seeds_code(api: Api) -> None:
    response = api.request("GET", "/api/jobs/does-not-exist/status")
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "JOB_NOT_FOUND",
                                        "message": "Job with ID does-not-exist not found"}


def test_failing_handler_marks_the_job_failed_with_its_message(api: Api) -> None:
    job = api.wait(api.submit_ok({"type": "fail", "parameters": {"message": "boom"}}))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "HANDLER_ERROR" and job["error"]["message"] == "boom"
    assert ISO_MS.match(job["error"]["timestamp"])


def test_retries_with_backoff_until_the_handler_succeeds(api: Api) -> None:
    job = api.wait(api.submit_ok({"type": "flaky", "retries": 2,
                                  "parameters": {"fail_times": 2}}), timeout=30)
    assert job["status"] == "completed"
    assert job["result"] == {"attempts": 3} and job["retry_count"] == 2


def test_a_job_that_exhausts_its_retries_fails(api: Api) -> None:
    job = api.wait(api.submit_ok({"type": "flaky", "retries": 1,
                                  "parameters": {"fail_times": 5}}), timeout=30)
    assert job["status"] == "failed" and job["attempts"] == 2


def test_a_job_over_its_time_limit_fails_with_job_timeout(api: Api) -> None:
    job = api.wait(api.submit_ok({"type": "sleep", "timeout_seconds": 1,
                                  "parameters": {"seconds": 10}}), timeout=20)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "JOB_TIMEOUT"


def test_progress_is_reported_while_a_job_runs(api: Api) -> None:
    job_id = api.submit_ok({"type": "sleep", "parameters": {"seconds": 2}})
    running = api.wait(job_id, {"running"}, timeout=10)
    assert running["started_at"]
    wait_for(lambda: 0 < api.job(job_id)["progress"] < 100, 5, message="partial progress")
    assert api.wait(job_id)["progress"] == 100


def test_correlation_id_is_stored_echoed_and_checked(api: Api) -> None:
    response = api.submit({"type": "echo"}, headers={"x-correlation-id": "req-123"})
    assert response.headers["x-correlation-id"] == "req-123"
    assert api.job(response.json()["job_id"])["correlation_id"] == "req-123"
    bad = api.submit({"type": "echo"}, headers={"x-correlation-id": "has spaces"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "INVALID_CORRELATION_ID"


def test_unknown_endpoints_and_methods_answer_in_the_error_contract(api: Api) -> None:
    missing = api.request("GET", "/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = api.request("GET", "/api/jobs/submit")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
