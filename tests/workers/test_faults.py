"""Faults: killed, stalled and duplicated workers, lost publishes, a Redis restart."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
import requests

from app.embedded_redis import RedisServer
from tasks.core.clock import now_ms
from tasks.jobs.store import NewJob
from tests.support import LiveServer, fresh_database, wait_for
from tests.workers.conftest import Stack, StackFactory

pytestmark = pytest.mark.slow


def wait_status(stack: Stack, job_id: str, statuses: set[str], timeout: float = 30) -> dict:
    return wait_for(lambda: (j := stack.job(job_id))["status"] in statuses and j, timeout,
                    interval=0.1, message=f"job {job_id} in {statuses}")


def test_a_sigkilled_worker_loses_no_job(stack: Stack) -> None:
    # Given a job running on worker A
    first = stack.worker("a")
    job_id = stack.submit({"type": "sleep", "parameters": {"seconds": 3}})
    running = wait_status(stack, job_id, {"running"})
    assert running["worker_id"] == first.hostname

    # When A is SIGKILLed with its pool (no Celery signal fires) and B comes up
    first.kill()
    killed_at = time.monotonic()
    second = stack.worker("b")

    # Then the job is queued again from its expired lease, long before the
    # one-hour visibility timeout, and completes on B
    job = wait_status(stack, job_id, {"completed", "failed"}, timeout=40)
    assert job["status"] == "completed"
    assert time.monotonic() - killed_at < 30
    assert job["worker_id"] == second.hostname
    assert (job["attempts"], job["lost"]) == (2, 1)


def test_a_duplicate_delivery_of_a_running_job_is_dropped(stack: Stack) -> None:
    # Given a job running on one of two workers
    stack.worker("a")
    stack.worker("b")
    job_id = stack.submit({"type": "sleep", "parameters": {"seconds": 2}})
    wait_status(stack, job_id, {"running"})

    # When its message is delivered again, as the visibility timeout or a
    # requeue does while the first run is still alive (celery#5935)
    job = stack.services.store.get(job_id)
    assert job is not None
    stack.services.dispatcher.publish(job)

    # Then the second delivery does not start a second run
    done = wait_status(stack, job_id, {"completed", "failed"})
    assert done["status"] == "completed" and done["attempts"] == 1


def test_a_stalled_worker_cannot_overwrite_the_run_that_replaced_it(stack: Stack) -> None:
    # Given a job running on worker A, which then stalls (SIGSTOP) past its lease
    first = stack.worker("a")
    job_id = stack.submit({"type": "sleep", "parameters": {"seconds": 4}})
    wait_status(stack, job_id, {"running"})
    assert first.process is not None
    os.killpg(first.process.pid, signal.SIGSTOP)
    second = stack.worker("b")
    wait_for(lambda: stack.job(job_id).get("worker_id") == second.hostname, 20,
             message="the job to move to worker B")

    # When A wakes up while B runs the job
    os.killpg(first.process.pid, signal.SIGCONT)

    # Then A stops at its next progress report, and B's outcome is the one recorded
    job = wait_status(stack, job_id, {"completed", "failed"})
    assert job["status"] == "completed" and job["worker_id"] == second.hostname
    assert job["attempts"] == 2
    assert "lost its lease" in (stack.logs / "a.log").read_text()


def test_a_poison_job_is_delivered_at_most_max_deliveries_times(
        make_stack: StackFactory, redis_server: RedisServer) -> None:
    stack = make_stack(fresh_database(redis_server.url), CHORDLINE_MAX_DELIVERIES="2")
    stack.worker("a")
    job_id = stack.submit({"type": "fail", "parameters": {"kill_worker": True}})
    job = wait_status(stack, job_id, {"failed", "completed"}, timeout=60)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "WORKER_LOST"
    assert job["attempts"] == 2


def test_a_job_whose_publish_was_lost_is_published_by_the_reaper(stack: Stack) -> None:
    # Given a job stored, but whose API process died before publishing it
    stack.worker("a")
    new = NewJob(tenant="tenant-a", type="echo", prompt=None, parameters={"value": 5},
                 priority=50, requirements={}, correlation_id="c", timeout=60)
    stack.services.store.create("lost-publish-1", new, outbox_due_ms=now_ms())
    # Then a worker's reaper publishes it and it runs
    job = wait_status(stack, "lost-publish-1", {"completed"}, timeout=20)
    assert job["result"] == {"value": 5}


def test_a_broker_failure_answers_503_and_stores_nothing(
        make_stack: StackFactory, redis_server: RedisServer) -> None:
    stack = make_stack(fresh_database(redis_server.url),
                       CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    server = LiveServer(stack.app).start()
    try:
        response = requests.post(f"{server.url}/api/jobs/submit", json={"type": "echo"},
                                 headers={"x-api-key": "key-tenant-a"}, timeout=30)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "BROKER_UNAVAILABLE"
        stats = requests.get(f"{server.url}/api/jobs/stats",
                             headers={"x-api-key": "key-tenant-a"}, timeout=10).json()
        assert stats["stats"]["total"] == 0
    finally:
        server.stop()


def test_a_full_redis_refuses_submissions_with_503_and_half_writes_nothing(
        make_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Redis runs with noeviction (README: sizing): at maxmemory it refuses writes, and
    a submission's one script is refused whole, before it writes anything."""
    redis_server = RedisServer(tmp_path_factory.mktemp("full")).start()
    stack = make_stack(redis_server.url)
    server = LiveServer(stack.app).start()
    client = redis.Redis.from_url(redis_server.url)
    headers = {"x-api-key": "key-tenant-a"}
    submit = f"{server.url}/api/jobs/submit"
    try:
        assert requests.post(submit, json={"type": "echo"}, headers=headers,
                             timeout=10).status_code == 200
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
        keys_before = client.dbsize()
        full = requests.post(submit, json={"type": "echo"}, headers=headers, timeout=10)
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert client.dbsize() == keys_before
        client.config_set("maxmemory", 0)
        assert requests.post(submit, json={"type": "echo"}, headers=headers,
                             timeout=10).status_code == 200
    finally:
        server.stop()
        client.close()
        redis_server.stop()


def test_a_redis_restart_loses_no_accepted_job_and_the_api_recovers(
        make_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Given a Redis of our own with AOF, a worker and the API on a real socket
    redis_server = RedisServer(tmp_path_factory.mktemp("restart")).start()
    stack = make_stack(redis_server.url, CHORDLINE_LEASE_SECONDS="15")
    stack.worker("a")
    server = LiveServer(stack.app).start()
    headers = {"x-api-key": "key-tenant-a"}
    submit = f"{server.url}/api/jobs/submit"
    try:
        running = requests.post(submit, json={"type": "sleep", "parameters": {"seconds": 3}},
                                headers=headers, timeout=10).json()["job_id"]
        queued = requests.post(submit, json={"type": "echo", "parameters": {"value": 1}},
                               headers=headers, timeout=10).json()["job_id"]
        wait_status(stack, running, {"running"})

        # When Redis goes away, the API answers 503 with a clear code
        redis_server.stop()
        down = requests.post(submit, json={"type": "echo"}, headers=headers, timeout=30)
        assert down.status_code == 503
        assert down.json()["error"]["code"] in {"SERVICE_UNAVAILABLE", "BROKER_UNAVAILABLE"}
        health = requests.get(f"{server.url}/health", timeout=30)
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"

        # And when it comes back (same port, same AOF), everything accepted completes
        redis_server.start()
        for job_id in (running, queued):
            assert wait_status(stack, job_id, {"completed", "failed"}, 60)["status"] == "completed"
        after = requests.post(submit, json={"type": "echo"}, headers=headers, timeout=10)
        assert after.status_code == 200
        assert wait_status(stack, after.json()["job_id"], {"completed"}, 30)
    finally:
        server.stop()
        for process in stack.workers:
            process.stop()
        redis_server.stop()
