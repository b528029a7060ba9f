"""The live API against its own OpenAPI document, over real HTTP with a real Redis and a
real worker: no answer is a 5xx, and every answer is one the document describes (a
documented status, its content type, its JSON schema, so an error's code is one the
response lists; its headers; a 405's Allow; a 401 for a bad key).

Two ways in. schemathesis generates requests from the document, positive and negative: a
tenant's key drives the tenants' routes and a viewer's key the operators' routes, so
their reads answer 200 and their changes a documented 403 (no fuzzed request drains the
session's machine). Its `positive_data_acceptance` check is off: a schema-valid request
may still be refused for what no schema can say (an unknown job type, a cursor this API
never issued, an Idempotency-Key used with another body), and each such refusal is
documented. Then real records (a finished job and workflow, a webhook delivery, an
upload, the session's machine) are read through every route and held to the same document,
which generated ids, always unknown, cannot reach.

The document is built at collection, from the code the server serves it from, because
schemathesis must see it before any fixture runs (its lazy `from_fixture` loader fails on
pytest 9.2, which renamed the node attribute it rewrites). Budget: about 25 s for the
generated run (a few cases per operation after the document's examples and schemathesis's
boundary cases) and a few seconds for the real records.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import hypothesis
import pytest
import requests
import schemathesis
from PIL import Image
from schemathesis.specs.openapi.schemas import OpenApiSchema

from app.openapi.document import build
from tests.support import Api, WebhookReceiver, wait_for

DOCUMENT = build()
STAFF_TAGS = ["machines", "operators"]
SETTINGS = hypothesis.settings(max_examples=5, deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))


def live(key: str) -> OpenApiSchema:
    """The document, with `key` as the valid credential."""
    return schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
        "auth": {"openapi": {"ApiKey": {"api_key": key}}},
        "request-timeout": 15,
        "generation": {"mode": "all"},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }))


# /ws is a WebSocket: tests/app/test_sockets.py speaks its protocol.
tenant = live("key-tenant-a").exclude(path="/ws").exclude(tag=STAFF_TAGS)
staff = live("key-viewer").include(tag=STAFF_TAGS)


def call_and_validate(case: schemathesis.Case, api: Api) -> None:
    if case.headers and "Prefer" in case.headers:
        case.headers["Prefer"] = "wait=1"  # not a minute's wait for a job no GPU will run
    case.call_and_validate(base_url=api.base_url)


@tenant.parametrize()
@SETTINGS
def test_a_tenants_answers_are_documented(case: schemathesis.Case, api: Api) -> None:
    call_and_validate(case, api)


@staff.parametrize()
@SETTINGS
def test_a_viewers_answers_are_documented(case: schemathesis.Case, api: Api) -> None:
    call_and_validate(case, api)


DOCUMENTED = live("key-tenant-a")


def conforms(response: requests.Response, path: str) -> requests.Response:
    """Hold one real answer to what the document says `path` answers."""
    method = str(response.request.method)
    answers = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in answers, (method, path, response.status_code)
    media = response.headers.get("content-type", "").split(";")[0]
    assert media in answers[str(response.status_code)].get("content", {media: None})
    DOCUMENTED[path][method].validate_response(response)
    return response


@pytest.fixture
def receiver(api: Api) -> Iterator[WebhookReceiver]:
    made = WebhookReceiver(api.webhook_secret())
    yield made
    made.stop()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 8), "red").save(out, format="PNG")
    return out.getvalue()


def test_real_records_read_as_documented(api: Api, receiver: WebhookReceiver) -> None:
    # Given a finished job with a webhook, a finished two-step workflow and an upload
    job = conforms(api.submit({"type": "text-to-image", "prompt": "a red fox", "parameters": {
        "width": 64, "height": 64}, "webhook_url": receiver.url}), "/api/jobs/submit").json()
    flow = conforms(api.request("POST", "/api/workflows", json=DOCUMENT["paths"][
        "/api/workflows"]["post"]["requestBody"]["content"]["application/json"]["example"]),
        "/api/workflows").json()
    upload = conforms(api.request("POST", "/api/artifacts", files={"file": png()}),
                      "/api/artifacts").json()["artifact"]
    done = api.wait(job["job_id"])
    api.wait_workflow(flow["workflow_id"])
    wait_for(lambda: receiver.ok, 20, message="the webhook")
    job_path, flow_path = f"/api/jobs/{job['job_id']}", f"/api/workflows/{flow['workflow_id']}"

    # Then every read of them answers as documented
    for path, template in [
            (f"{job_path}/status", "/api/jobs/{job_id}/status"),
            (f"{job_path}/events", "/api/jobs/{job_id}/events"),
            (f"{job_path}/webhooks", "/api/jobs/{job_id}/webhooks"),
            (f"{flow_path}/status", "/api/workflows/{workflow_id}/status"),
            (f"{flow_path}/events", "/api/workflows/{workflow_id}/events"),
            (f"{flow_path}/webhooks", "/api/workflows/{workflow_id}/webhooks"),
            ("/api/jobs?limit=5", "/api/jobs"), ("/api/workflows", "/api/workflows"),
            ("/api/jobs/stats", "/api/jobs/stats"),
            ("/api/workflows/stats", "/api/workflows/stats"),
            (done["result"]["artifacts"][0]["url"], "/api/artifacts/{artifact_id}"),
            (upload["url"], "/api/artifacts/{artifact_id}"),
            ("/health", "/health"), ("/health/ready", "/health/ready")]:
        conforms(api.request("GET", path), template)
    assert api.request("GET", f"{job_path}/webhooks").json()["deliveries"][0]["attempts"]


def test_changes_and_the_operators_reads_answer_as_documented(api: Api) -> None:
    operator = Api(api.base_url, "key-operator")
    # Given jobs and a workflow that wait for a machine no test starts
    stuck = {"type": "echo", "requirements": {"labels": {"zone": "mars"}}}
    waited = conforms(api.submit(stuck, headers={"Prefer": "wait=1"}), "/api/jobs/submit")
    assert waited.json()["job"]["waiting_reason"] and waited.headers["Preference-Applied"]
    job_id = api.submit_ok(stuck)
    flow_id, _ = api.create_workflow({"name": "stuck", "steps": [stuck]})
    # Then changing them, and the operators' reads, answer as documented
    for response, template in [
            (api.request("POST", f"/api/jobs/{job_id}/cancel"), "/api/jobs/{job_id}/cancel"),
            (api.request("POST", f"/api/jobs/{waited.json()['job_id']}/cancel",
                         json={"reason": "done"}), "/api/jobs/{job_id}/cancel"),
            (api.request("POST", f"/api/workflows/{flow_id}/cancel"),
             "/api/workflows/{workflow_id}/cancel"),
            (api.request("POST", "/api/ws-tickets"), "/api/ws-tickets"),
            (operator.request("POST", "/api/machines", json={"id": "openapi-1"}), "/api/machines"),
            (operator.request("POST", "/api/machines/openapi-1/drain"),
             "/api/machines/{machine_id}/drain"),
            (operator.request("POST", "/api/machines/openapi-1/resume"),
             "/api/machines/{machine_id}/resume"),
            (operator.request("GET", "/api/machines/openapi-1"), "/api/machines/{machine_id}"),
            (operator.request("GET", "/api/machines"), "/api/machines"),
            (operator.request("GET", "/api/overview"), "/api/overview"),
            (operator.request("GET", "/api/audit"), "/api/audit"),
            (operator.request("GET", "/api/events?limit=50"), "/api/events"),
            (operator.request("GET", "/metrics"), "/metrics")]:
        assert response.status_code < 300, (template, response.text)
        conforms(response, template)
    # And refusals too: the workflow has nothing to undo
    conforms(api.request("POST", f"/api/workflows/{flow_id}/compensate"),
             "/api/workflows/{workflow_id}/compensate")

