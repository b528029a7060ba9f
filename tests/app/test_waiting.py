"""`Prefer: wait=N` on submit and status: answered when the job is final or after N seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support import Api, WebProcess, WorkerProcess


def sleep_job(seconds: float) -> dict[str, object]:
    return {"type": "sleep", "parameters": {"seconds": seconds}}


def test_submit_answers_the_finished_job_when_it_finishes_in_time(api: Api) -> None:
    started = time.monotonic()
    response = api.submit(sleep_job(0.5), headers={"Prefer": "wait=20"})
    took = time.monotonic() - started
    body = response.json()
    assert response.status_code == 200 and response.headers["Preference-Applied"] == "wait=20"
    assert body["status"] == body["job"]["status"] == "completed"
    assert body["job"]["result"] == {"slept": 0.5}
    assert 0.5 <= took < 10


def test_the_wait_ends_after_n_seconds_with_the_job_as_it_stands(api: Api) -> None:
    job_id = api.submit_ok(sleep_job(4))
    started = time.monotonic()
    response = api.request("GET", f"/api/jobs/{job_id}/status", headers={"Prefer": "wait=1"})
    took = time.monotonic() - started
    assert response.json()["job"]["status"] in {"pending", "running"}
    assert 1 <= took < 3
    final = api.request("GET", f"/api/jobs/{job_id}/status", headers={"Prefer": "wait=20"})
    assert final.json()["job"]["status"] == "completed"


def test_a_wait_is_capped_at_sixty_seconds_and_a_final_job_answers_at_once(api: Api) -> None:
    job_id = api.submit_ok({"type": "echo", "parameters": {"value": 1}})
    api.wait(job_id)
    started = time.monotonic()
    response = api.request("GET", f"/api/jobs/{job_id}/status",
                           headers={"Prefer": "respond-async, wait=3600"})
    assert response.headers["Preference-Applied"] == "wait=60"
    assert time.monotonic() - started < 1


@pytest.fixture
def one_worker(stack_env: dict[str, str], worker: WorkerProcess,
               tmp_path: Path) -> Iterator[WebProcess]:
    process = WebProcess(stack_env, tmp_path / "web.log", workers=1).start()
    yield process
    process.stop()


def test_many_waiters_cost_one_process_no_thread_each(one_worker: WebProcess) -> None:
    """One gunicorn (gevent) process holds 40 waiters and answers each when the job ends."""
    headers = {"x-api-key": "key-tenant-a"}
    job_id = requests.post(f"{one_worker.url}/api/jobs/submit", json=sleep_job(2),
                           headers=headers, timeout=5).json()["job_id"]

    def wait() -> tuple[str, float]:
        started = time.monotonic()
        response = requests.get(f"{one_worker.url}/api/jobs/{job_id}/status", timeout=30,
                                headers={**headers, "Prefer": "wait=25"})
        return response.json()["job"]["status"], time.monotonic() - started

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: wait(), range(40)))
    assert {status for status, _ in answers} == {"completed"}
    assert max(took for _, took in answers) < 15
