"""Webhooks end to end: a real receiver that checks signatures, the real API and worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tasks.core import keys
from tasks.services import Services
from tasks.webhooks import signature
from tests.support import ROOT, Api, WebhookReceiver, kept, wait_for


@pytest.fixture
def secret(api: Api) -> str:
    return api.webhook_secret()


@pytest.fixture
def receivers() -> Iterator[list[WebhookReceiver]]:
    made: list[WebhookReceiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def receiver_for(receivers: list[WebhookReceiver], secret: str, **kw: Any) -> WebhookReceiver:
    receiver = WebhookReceiver(secret, **kw)
    receivers.append(receiver)
    return receiver


def deliveries(api: Api, path: str) -> list[dict[str, Any]]:
    response = api.request("GET", f"{path}/webhooks")
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def settled(api: Api, path: str, count: int) -> list[dict[str, Any]]:
    """The subject's deliveries once `count` of them are delivered or failed."""
    return wait_for(lambda: (found := deliveries(api, path)) and len(
        [d for d in found if d["status"] != "pending"]) >= count and found, 20,
        message=f"{count} deliveries of {path} to settle")


def test_a_finished_job_is_delivered_once_signed_the_standard_way(
        api: Api, secret: str, receivers: list[WebhookReceiver]) -> None:
    receiver = receiver_for(receivers, secret)
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 7},
                            "webhook_url": receiver.url})

    [delivery] = settled(api, f"/api/jobs/{job_id}", 1)

    [got] = receiver.ok
    assert got["verified"] and got["id"] == delivery["id"] == f"msg_{delivery['event_id']}"
    assert got["body"]["type"] == "job.completed" and got["body"]["timestamp"]
    assert got["body"]["data"]["job_id"] == job_id
    assert got["body"]["data"]["id"] == delivery["event_id"]
    assert got["headers"]["content-type"] == "application/json"
    assert delivery["status"] == "delivered" and delivery["url"] == receiver.url
    assert [(a["n"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (1, 200, None)]
    events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    delivered = [e for e in events if e["type"] == "webhook.delivered"]
    assert delivered[0]["data"]["delivery_id"] == delivery["id"]


def test_the_filter_chooses_the_events_and_they_arrive_in_order(
        api: Api, secret: str, receivers: list[WebhookReceiver]) -> None:
    receiver = receiver_for(receivers, secret)
    job_id = api.submit_ok({"type": "sleep", "parameters": {"seconds": 0.5},
                            "webhook_url": receiver.url,
                            "webhook_events_filter": ["queued", "start", "progress",
                                                      "completed"]})
    api.wait(job_id)
    wait_for(lambda: (found := deliveries(api, f"/api/jobs/{job_id}"))
             and found[-1]["type"] == "job.completed"
             and all(d["status"] != "pending" for d in found), 20)
    events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    chosen = [e["id"] for e in events if not e["type"].startswith("webhook.")]

    # Every event was delivered as it happened; the job keeps its last progress of them.
    assert [e["id"] for e in kept([d["body"]["data"] for d in receiver.ok])] == chosen
    types = receiver.types()
    assert types[:2] == ["job.queued", "job.started"] and types[-1] == "job.completed"
    assert "job.progress" in types and all(d["verified"] for d in receiver.ok)


def test_a_failing_receiver_is_retried_honouring_retry_after(
        api: Api, secret: str, receivers: list[WebhookReceiver]) -> None:
    def reply(n: int, _: dict[str, Any]) -> tuple[int, dict[str, str]]:
        return {1: (503, {}), 2: (429, {"Retry-After": "1"})}.get(n, (204, {}))

    receiver = receiver_for(receivers, secret, reply=reply)
    job_id = api.submit_ok({"type": "echo", "webhook_url": receiver.url})

    [delivery] = settled(api, f"/api/jobs/{job_id}", 1)

    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 429, 204]
    _, second, third = (r["at"] for r in receiver.requests)
    assert third - second >= 1.0  # Retry-After, above the 0.2 s backoff
    assert len({r["id"] for r in receiver.requests}) == 1  # one webhook-id: receivers dedupe


@pytest.mark.parametrize("status, error", [(400, "answered 400"),
                                           (302, "redirects are not followed")])
def test_a_refusal_fails_the_delivery_at_once_and_the_next_one_goes(
        api: Api, secret: str, receivers: list[WebhookReceiver], status: int,
        error: str) -> None:
    receiver = receiver_for(receivers, secret, reply=lambda n, _: (
        (status, {"Location": "http://127.0.0.1:1/"}) if n == 1 else (200, {})))
    job_id = api.submit_ok({"type": "echo", "webhook_url": receiver.url,
                            "webhook_events_filter": ["start", "completed"]})

    first, second = settled(api, f"/api/jobs/{job_id}", 2)

    assert (first["type"], first["status"]) == ("job.started", "failed")
    assert [a["status_code"] for a in first["attempts"]] == [status]
    assert error in first["attempts"][0]["error"]
    assert (second["type"], second["status"]) == ("job.completed", "delivered")
    events = api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]
    failed = [e for e in events if e["type"] == "webhook.failed"]
    assert failed[0]["data"]["event_type"] == "job.started"


def test_a_new_secret_signs_beside_the_old_one_for_the_grace_period(
        api: Api, receivers: list[WebhookReceiver]) -> None:
    old = api.webhook_secret()
    new = api.webhook_secret()
    assert new != old and new.startswith("whsec_")
    receiver = receiver_for(receivers, new)
    job_id = api.submit_ok({"type": "echo", "webhook_url": receiver.url})

    settled(api, f"/api/jobs/{job_id}", 1)

    [got] = receiver.ok
    assert len(got["headers"]["webhook-signature"].split()) == 2
    for either in (old, new):
        signature.verify(either, got["headers"], got["raw"])
    with pytest.raises(signature.InvalidSignature):
        signature.verify(signature.new_secret(), got["headers"], got["raw"])


def test_a_workflow_delivers_its_steps_and_its_end_in_order(
        api: Api, secret: str, receivers: list[WebhookReceiver]) -> None:
    receiver = receiver_for(receivers, secret)
    workflow_id, job_ids = api.create_workflow({
        "name": "hooked", "webhook_url": receiver.url,
        "webhook_events_filter": ["progress", "completed"],
        "steps": [{"type": "echo", "parameters": {"value": 1}},
                  {"type": "echo", "parameters": {"value": 2}, "depends_on": [0]}]})
    api.wait_workflow(workflow_id)

    found = settled(api, f"/api/workflows/{workflow_id}", 5)

    assert [d["type"] for d in found] == ["job.started", "job.completed", "job.started",
                                          "job.completed", "workflow.completed"]
    assert [d["body"]["data"].get("job_id") for d in receiver.ok[:4]] == [
        job_ids[0], job_ids[0], job_ids[1], job_ids[1]]
    assert receiver.types()[-1] == "workflow.completed"


def test_a_tenants_signing_secret_exists_from_its_first_webhook(api_b: Api) -> None:
    # Given a tenant that never asked for a secret: the seed's body, webhook_url and all
    url = "http://127.0.0.1:9/hooks"
    response = api_b.submit({"type": "echo", "webhook_url": url})
    assert response.status_code == 200, response.text
    # Then it has one, the same on every read, until it is rotated
    first = api_b.request("GET", "/api/webhooks/secret")
    assert first.status_code == 200 and first.json()["secret"].startswith("whsec_")
    assert api_b.request("GET", "/api/webhooks/secret").json() == first.json()
    rotated = api_b.webhook_secret()
    assert rotated != first.json()["secret"]
    assert api_b.request("GET", "/api/webhooks/secret").json()["secret"] == rotated


# The seed's own examples (its integration tests' bodies), webhook_url and all.
SEED_JOB = {"type": "text-to-image", "prompt": "Integration test image",
            "parameters": {"width": 512, "height": 512}, "priority": 75,
            "webhook_url": "https://example.com/webhook"}
SEED_WORKFLOW = {
    "name": "Integration Test Workflow", "description": "Multi-step workflow for testing",
    "steps": [{"type": "text-to-image", "prompt": "Base image",
               "parameters": {"width": 512, "height": 512}},
              {"type": "upscale", "parameters": {"scale_factor": 2}, "depends_on": [0]}],
    "webhook_url": "https://example.com/workflow-webhook"}


def test_the_seeds_bodies_are_accepted_with_no_set_up(api_b: Api) -> None:
    # Given a tenant that never made a secret, on a host whose DNS may not answer for
    # example.com (each delivery checks the name again, and retries)
    job = api_b.submit(SEED_JOB)
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "submitted"
    workflow = api_b.request("POST", "/api/workflows", json=SEED_WORKFLOW)
    assert workflow.status_code == 200, workflow.text
    assert len(workflow.json()["job_ids"]) == 2


def test_a_webhook_needs_a_valid_filter(api: Api, secret: str) -> None:
    url = "http://127.0.0.1:9/hooks"
    cases = [
        (api, {"webhook_url": url, "webhook_events_filter": ["finished"]},
         "webhook_events_filter"),
        (api, {"webhook_url": url, "webhook_events_filter": []}, "webhook_events_filter"),
        (api, {"webhook_events_filter": ["completed"]}, "needs a webhook_url"),
    ]
    for client, extra, message in cases:
        response = client.submit({"type": "echo", **extra})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "JOB_SUBMISSION_FAILED"
        assert message in response.json()["error"]["message"]


def test_a_viewer_cannot_make_or_read_a_secret(live_server: Any) -> None:
    viewer = Api(live_server.url, "key-viewer")
    assert viewer.request("POST", "/api/webhooks/secret").status_code == 403
    assert viewer.request("GET", "/api/webhooks/secret").status_code == 403


def test_deliveries_of_another_tenants_job_are_not_found(api: Api, api_b: Api) -> None:
    job_id = api.submit_ok({"type": "echo"})
    assert api_b.request("GET", f"/api/jobs/{job_id}/webhooks").status_code == 404
    assert api.request("GET", f"/api/jobs/{job_id}/webhooks").json()["deliveries"] == []


def test_the_readmes_receiver_verifies_a_real_delivery(
        api: Api, secret: str, receivers: list[WebhookReceiver]) -> None:
    receiver = receiver_for(receivers, secret)
    job_id = api.submit_ok({"type": "echo", "webhook_url": receiver.url})
    settled(api, f"/api/jobs/{job_id}", 1)
    [got] = receiver.ok
    example: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(readme_block("<!-- receiver-example -->"), example)

    assert example["verify"](secret, got["headers"], got["raw"])
    assert not example["verify"](secret, got["headers"], got["raw"] + b" ")
    assert not example["verify"](signature.new_secret(), got["headers"], got["raw"])
    flask_client = example["app"].test_client()
    example["SECRET"] = secret
    headers = {k: v for k, v in got["headers"].items()
               if k.startswith("webhook-") or k == "content-type"}
    assert flask_client.post("/hooks", data=got["raw"], headers=headers).status_code == 204
    assert flask_client.post("/hooks", data=b"{}", headers=headers).status_code == 401


def readme_block(marker: str) -> str:
    text = (ROOT / "docs" / "jobs.md").read_text()
    after = text[text.index(marker):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_deliveries_expire_with_their_job_whatever_the_filter_takes(
        api: Api, secret: str, services: Services, receivers: list[WebhookReceiver]) -> None:
    receiver = receiver_for(receivers, secret)
    job_id = api.submit_ok({"type": "echo", "webhook_url": receiver.url,
                            "webhook_events_filter": ["start"]})
    api.wait(job_id)
    settled(api, f"/api/jobs/{job_id}", 1)
    hooks = keys.job_webhooks(job_id)
    assert 0 < services.redis.ttl(hooks) <= services.redis.ttl(keys.job(job_id)) + 1
