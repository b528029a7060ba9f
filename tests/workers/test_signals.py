"""The signal-to-event bridge on real workers: what only Celery's signals can see."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.core.events import EVERYTHING, EventType, Feed, job_feed
from tests.support import wait_for
from tests.tasks.conftest import new_job
from tests.workers.conftest import Stack

pytestmark = pytest.mark.slow


def events(stack: Stack, feed: Feed = EVERYTHING) -> list[dict[str, Any]]:
    return stack.services.events.read(feed)


def worker_events(stack: Stack, hostname: str) -> list[tuple[str, Any]]:
    return [(e["type"], e["data"].get("reason")) for e in events(stack)
            if e["worker"] == hostname and e["type"].startswith("worker.")]


def test_workers_announce_online_and_offline_even_when_killed(stack: Stack) -> None:
    first = stack.worker("a")
    second = stack.worker("b")
    # SIGKILL fires no signal: the surviving worker's heartbeat announces it
    first.kill()
    wait_for(lambda: len(worker_events(stack, first.hostname)) == 2, 15,
             message="the killed worker announced offline")
    assert worker_events(stack, first.hostname) == [
        (EventType.WORKER_ONLINE, None), (EventType.WORKER_OFFLINE, "heartbeat_lost")]
    # A graceful stop says goodbye itself
    second.stop()
    assert worker_events(stack, second.hostname) == [
        (EventType.WORKER_ONLINE, None), (EventType.WORKER_OFFLINE, "shutdown")]


def test_a_job_revoked_in_celery_is_cancelled_not_left_pending(stack: Stack) -> None:
    # Given a busy worker and a job queued behind the one it runs
    stack.worker("a", concurrency=1)
    busy = stack.submit({"type": "sleep", "parameters": {"seconds": 2}})
    wait_for(lambda: stack.job(busy)["status"] == "running", 15)
    queued = stack.submit({"type": "echo", "parameters": {"value": 1}})
    # When an operator revokes it with Celery's own tools, outside Chordline's API
    stack.app.extensions["celery"].control.revoke(queued)
    # Then Celery drops the message, and the job ends cancelled with its event
    job = wait_for(lambda: (j := stack.job(queued))["status"] != "pending" and j, 20)
    assert job["status"] == "cancelled"
    last = events(stack, job_feed(queued))[-1]
    assert last["type"] == EventType.JOB_CANCELLED
    assert last["data"]["error"]["code"] == "JOB_REVOKED"


def test_a_message_for_an_unknown_task_fails_its_job(stack: Stack) -> None:
    stack.worker("a")
    # Given a pending job whose only message names a task no worker has (an older
    # or newer deployment's), which Celery drops
    stack.services.store.create("job-1", new_job(), None)
    stack.app.extensions["celery"].send_task(
        "chordline.no_such_task", args=["job-1"], task_id="job-1",
        queue=stack.services.settings.queue)
    # Then the job fails with the reason instead of staying pending for ever
    job = wait_for(lambda: (j := stack.job("job-1"))["status"] != "pending" and j, 20)
    assert job["status"] == "failed"
    last = events(stack, job_feed("job-1"))[-1]
    assert last["type"] == EventType.JOB_FAILED
    assert last["data"]["error"]["code"] == "UNKNOWN_TASK"


def test_a_stray_message_never_ends_a_running_job(stack: Stack) -> None:
    stack.worker("a")
    job_id = stack.submit({"type": "sleep", "parameters": {"seconds": 1.5}})
    wait_for(lambda: stack.job(job_id)["status"] == "running", 15)
    stack.app.extensions["celery"].send_task(
        "chordline.no_such_task", args=[job_id], task_id=job_id,
        queue=stack.services.settings.queue)
    job = wait_for(lambda: (j := stack.job(job_id))["status"] != "running" and j, 20)
    assert job["status"] == "completed"
