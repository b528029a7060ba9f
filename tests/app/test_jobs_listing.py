"""Cancelling, listing and counting jobs over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from app import create_app
from tasks.core import keys
from tasks.jobs.message import broker_lists
from tasks.jobs.store import Job
from tasks.services import Services
from tests.support import Api, overrides_from_env, wait_for


@pytest.fixture
def parked(stack_env: dict[str, str]) -> Iterator[Services]:
    """Services that publish to a queue no worker consumes: their jobs stay pending (each
    job below also asks for a label no worker has, so its route is nobody's either)."""
    overrides = {**overrides_from_env(stack_env), "queue": "parked"}
    app: Flask = create_app(overrides)
    yield app.extensions["chordline"]


def test_a_pending_job_can_be_cancelled_once(api: Api, parked: Services) -> None:
    job = parked.jobs.submit("tenant-a", {"type": "echo", "priority": 50, "retries": 0,
                                          "requirements": {"labels": {"parked": "yes"}}}, "cid")
    response = api.request("POST", f"/api/jobs/{job.id}/cancel", json={"reason": "changed mind"})
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Job cancelled successfully"}
    cancelled = api.job(job.id)
    assert cancelled["status"] == "cancelled" and cancelled["completed_at"]
    assert cancelled["error"]["code"] == "JOB_CANCELLED"
    again = api.request("POST", f"/api/jobs/{job.id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "Cannot cancel job in status: cancelled"


def test_a_cancelled_job_is_never_run_even_if_its_message_arrives(
        api: Api, parked: Services, services: Services) -> None:
    # A job no machine fits stays pending on its route; cancelled, its message is then
    # sent to the queue the real worker consumes, as a late or duplicate delivery would
    unfit = {"type": "echo", "priority": 50, "retries": 0,
             "requirements": {"labels": {"zone": "nowhere"}}}
    job = parked.jobs.submit("tenant-a", unfit, "cid")
    assert api.request("POST", f"/api/jobs/{job.id}/cancel").status_code == 200
    raw = services.redis.hgetall(keys.job(job.id))
    services.dispatcher.publish(Job.from_hash({**raw, "route": ""}))
    queue = services.settings.queue

    lists = broker_lists(queue)

    def consumed() -> bool:
        return not any(services.redis.llen(name) for name in lists)

    wait_for(consumed, 10, message="the worker to take the message")
    api.wait(api.submit_ok({"type": "echo"}))  # the worker has had time to act on it
    assert api.job(job.id)["status"] == "cancelled" and api.job(job.id)["attempts"] == 0


def test_a_running_job_cannot_be_cancelled(api: Api) -> None:
    job_id = api.submit_ok({"type": "sleep", "parameters": {"seconds": 2}})
    api.wait(job_id, {"running"})
    response = api.request("POST", f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "JOB_NOT_CANCELLABLE",
                                        "message": "Cannot cancel job in status: running"}


def test_cancelling_an_unknown_job_is_a_404(api: Api) -> None:
    response = api.request("POST", "/api/jobs/nope/cancel")
    assert response.status_code == 404 and response.json()["error"]["code"] == "JOB_NOT_FOUND"


def test_stats_count_the_tenants_jobs_by_status_and_type(live_server: object, api: Api) -> None:
    stats_api = Api(api.base_url, "key-stats-only")
    done = [stats_api.submit_ok({"type": "echo"}) for _ in range(3)]
    failed = stats_api.submit_ok({"type": "fail"})
    for job_id in [*done, failed]:
        stats_api.wait(job_id)
    body = stats_api.request("GET", "/api/jobs/stats?timeframe=hour").json()
    assert body["timeframe"] == "hour"
    stats = body["stats"]
    assert (stats["total"], stats["completed"], stats["failed"], stats["pending"],
            stats["running"]) == (4, 3, 1, 0, 0)
    assert stats["by_type"] == {"echo": 3, "fail": 1}


def test_a_bad_timeframe_is_a_400(api: Api) -> None:
    response = api.request("GET", "/api/jobs/stats?timeframe=year")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("INVALID_TIMEFRAME",
                                                 "Timeframe must be hour, day, or week")


def test_listing_pages_newest_first_with_filters(api: Api, live_server: object) -> None:
    lister = Api(api.base_url, "key-tenant-b")
    ids = [lister.submit_ok({"type": "echo", "parameters": {"value": i}}) for i in range(5)]
    failing = lister.submit_ok({"type": "fail"})
    for job_id in [*ids, failing]:
        lister.wait(job_id)
    seen, cursor = [], None
    while True:
        params = {"type": "echo", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = lister.request("GET", "/api/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen[:5] == ids[::-1]
    failed = lister.request("GET", "/api/jobs", params={"status": "failed", "type": "fail"}).json()
    assert failing in [j["id"] for j in failed["jobs"]]
    assert all(j["status"] == "failed" for j in failed["jobs"])


@pytest.mark.parametrize("params", [{"status": "sleeping"}, {"limit": "0"}, {"limit": "x"},
                                    {"cursor": "!!!"}])
def test_bad_list_queries_are_400s(api: Api, params: dict[str, str]) -> None:
    response = api.request("GET", "/api/jobs", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"INVALID_QUERY", "INVALID_CURSOR"}
