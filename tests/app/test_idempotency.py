"""Idempotency-Key on submit and on workflow creation (Stripe's semantics), on the real stack."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tasks.services import Services
from tests.support import Api

JOB = {"type": "echo", "parameters": {"value": "once"}}
WORKFLOW = {"name": "once", "steps": [{"type": "echo", "parameters": {"value": 1}}]}
ROUTES = [("/api/jobs/submit", JOB, "job_id"), ("/api/workflows", WORKFLOW, "workflow_id")]


def post(api: Api, path: str, body: Any, key: str) -> requests.Response:
    return api.request("POST", path, json=body, headers={"Idempotency-Key": key})


def count_jobs(services: Services, tenant: str = "tenant-a") -> int:
    return int(services.redis.zcard(f"chordline:idx:{tenant}:all"))


@pytest.mark.parametrize(("path", "body", "id_field"), ROUTES)
def test_a_repeat_answers_the_first_response_and_creates_nothing(
        api: Api, services: Services, path: str, body: dict[str, Any], id_field: str) -> None:
    key = str(uuid.uuid4())
    first = post(api, path, body, key)
    jobs = count_jobs(services)
    # The same body, spaced and ordered differently, is the same request
    again = api.request("POST", path, data=" " + json.dumps(
        dict(reversed(list(body.items())))), headers={"Idempotency-Key": key,
                                                      "content-type": "application/json"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.json()[id_field]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_jobs(services) == jobs


@pytest.mark.parametrize(("path", "body", "id_field"), ROUTES)
def test_the_same_key_with_another_body_is_refused(api: Api, path: str, body: dict[str, Any],
                                                   id_field: str) -> None:
    key = str(uuid.uuid4())
    assert post(api, path, body, key).status_code == 200
    other = post(api, path, {**body, "priority": 99}, key)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")


def test_concurrent_requests_with_one_key_create_one_job(api: Api, services: Services) -> None:
    key = str(uuid.uuid4())
    jobs = count_jobs(services)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(api, "/api/jobs/submit", JOB, key), range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert count_jobs(services) == jobs + 1


def test_keys_belong_to_their_tenant(api: Api, api_b: Api) -> None:
    key = str(uuid.uuid4())
    mine = post(api, "/api/jobs/submit", JOB, key).json()["job_id"]
    theirs = post(api_b, "/api/jobs/submit", JOB, key).json()["job_id"]
    assert mine != theirs


def test_a_refusal_is_replayed_too_and_a_bad_key_is_a_400(api: Api) -> None:
    key = str(uuid.uuid4())
    bad = {"type": "no-such-type"}
    first = post(api, "/api/jobs/submit", bad, key)
    again = post(api, "/api/jobs/submit", bad, key)
    assert first.status_code == again.status_code == 400 and again.json() == first.json()
    invalid = post(api, "/api/jobs/submit", JOB, "x" * 256)
    assert (invalid.status_code, invalid.json()["error"]["code"]) == \
        (400, "INVALID_IDEMPOTENCY_KEY")
