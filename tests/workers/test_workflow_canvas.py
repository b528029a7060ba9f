"""Compiled canvas on a real worker and Redis: order, exactly-once, and faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.embedded_redis import RedisServer
from tasks.core import keys
from tests.support import wait_for
from tests.tasks.workflows.test_compiler import dags
from tests.workers.conftest import Stack, shared_stack

pytestmark = pytest.mark.slow
DONE = {"completed", "failed", "cancelled"}


def create(stack: Stack, depends_on: list[list[int]], seconds: float = 0.0,
           overrides: dict[int, dict[str, Any]] | None = None) -> tuple[str, list[str]]:
    """Create a workflow of sleep steps; `overrides` replaces fields of some steps."""
    overrides = overrides or {}
    steps = [{"type": "sleep", "parameters": {"seconds": seconds}, "depends_on": deps,
              "retries": 0, **overrides.get(i, {})} for i, deps in enumerate(depends_on)]
    workflow = stack.services.workflows.create(
        "tenant-a", {"name": "canvas", "priority": 50, "steps": steps}, "canvas-test")
    return workflow.id, workflow.job_ids


def queued(stack: Stack) -> int:
    """Messages waiting in the base queue and the route queues, over all priority lists."""
    queues = [stack.services.settings.queue, *stack.services.routes.registered()]
    names = [name for q in queues for name in (q, *(f"{q}:{level}" for level in range(1, 10)))]
    return sum(int(stack.services.redis.llen(name)) for name in names)


def finished(stack: Stack, workflow_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    store = stack.services.workflow_store
    wait_for(lambda: (w := store.get(workflow_id)) is not None and w["status"] in DONE,
             timeout, interval=0.1, message=f"workflow {workflow_id} to finish")
    workflow = store.get(workflow_id)
    assert workflow is not None
    return [dict(job.fields) for job in store.steps(workflow) if job is not None]


def assert_ran_once_in_order(steps: list[dict[str, Any]], depends_on: list[list[int]]) -> None:
    for index, (step, deps) in enumerate(zip(steps, depends_on, strict=True)):
        assert step["status"] == "completed", (index, step)
        assert step["attempts"] == 1, (index, step)
        for dep in deps:
            assert step["started_at"] >= steps[dep]["completed_at"], (index, dep)


@pytest.fixture(scope="module")
def canvas_stack(tmp_path_factory: pytest.TempPathFactory,
                 redis_server: RedisServer) -> Iterator[Stack]:
    """One stack with a wide worker, shared by the generated DAGs."""
    with shared_stack(tmp_path_factory, redis_server, "wide", concurrency=8) as stack:
        yield stack


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(dags(max_steps=14), st.sampled_from([0.0, 0.05]))
def test_random_dags_run_every_step_once_after_its_dependencies(
        canvas_stack: Stack, depends_on: list[list[int]], seconds: float) -> None:
    workflow_id, _ = create(canvas_stack, depends_on, seconds)
    assert_ran_once_in_order(finished(canvas_stack, workflow_id), depends_on)


@pytest.mark.parametrize("depends_on", [
    [[]],
    [[], [0], [1], [2]],
    [[], [], [], [0, 1, 2]],
    [[], [0], [0], [0], [1, 2, 3]],
    [[], [], [0, 1], [0, 1]],
    [[], [], [0, 1], [1]],
    [[], [0], [0], [], [1, 2, 3], [4]],
    [[], [], [0, 1], [], [2, 3], [4], [4], [5, 6]],
], ids=["single", "chain", "fan-in", "diamond", "group-then-group", "n-shape",
        "header-branch-ending-in-a-group", "nested"])
def test_every_shape_the_compiler_emits_runs_in_order(
        canvas_stack: Stack, depends_on: list[list[int]]) -> None:
    workflow_id, _ = create(canvas_stack, depends_on, 0.05)
    assert_ran_once_in_order(finished(canvas_stack, workflow_id), depends_on)


@pytest.mark.parametrize("depends_on", [
    [[i - 1] if i else [] for i in range(40)],
    [[i - 1] if i else [] for i in range(20)] + [[19], [19]] + [[20, 21]]
    + [[i - 1] for i in range(23, 45)],
], ids=["chain-40", "chain-fan-out-chain"])
def test_a_chain_cut_into_segments_runs_in_order(canvas_stack: Stack,
                                                 depends_on: list[list[int]]) -> None:
    # Given a workflow long enough that its chain is cut (tasks/workflows/compiler.py SEGMENT)
    workflow_id, job_ids = create(canvas_stack, depends_on)
    heads = [i for i, j in enumerate(job_ids)
             if canvas_stack.services.redis.hget(keys.job(j), "parked") == "1"]
    assert heads, "no segment was parked"
    # Then the segments follow one another: every step once, after its dependencies
    assert_ran_once_in_order(finished(canvas_stack, workflow_id), depends_on)


def test_a_duplicate_of_a_running_header_step_does_not_fire_the_chord_early(
        canvas_stack: Stack) -> None:
    # Given a fan-in whose first header step is running
    depends_on: list[list[int]] = [[], [], [0, 1]]
    workflow_id, job_ids = create(canvas_stack, depends_on, 0.2,
                                  {0: {"parameters": {"seconds": 2}}})
    services = canvas_stack.services
    wait_for(lambda: (j := services.store.get(job_ids[0])) and j.status == "running", 10,
             message="step 0 to run")
    # When its message is delivered again while it runs (celery#5935)
    job = services.store.get(job_ids[0])
    assert job is not None and job.get("envelope")
    services.dispatcher.publish(job)
    # Then the join step still waits for the original run
    steps = finished(canvas_stack, workflow_id)
    assert_ran_once_in_order(steps, depends_on)


def test_a_step_delivered_before_its_dependencies_waits_for_them(canvas_stack: Stack) -> None:
    # Given a chain whose second step is waiting on a running first step
    depends_on: list[list[int]] = [[], [0]]
    workflow_id, job_ids = create(canvas_stack, depends_on, 0.0,
                                  {0: {"parameters": {"seconds": 1.5}}})
    services = canvas_stack.services
    wait_for(lambda: (j := services.store.get(job_ids[0])) and j.status == "running", 10,
             message="step 0 to run")
    # When the second step's message arrives early (as from a misfired chord)
    celery = canvas_stack.app.extensions["celery"]
    celery.send_task("chordline.run_step", kwargs={"job_id": job_ids[1]}, task_id=job_ids[1],
                     queue=services.settings.queue)
    wait_for(lambda: services.redis.hget(keys.job(job_ids[1]), "parked") == "1", 10,
             message="the early step to be parked")
    # Then it runs once, after the first step, released by the first step's completion
    assert_ran_once_in_order(finished(canvas_stack, workflow_id), depends_on)


def test_a_sigkilled_worker_mid_workflow_loses_no_step(stack: Stack) -> None:
    # Given a diamond whose middle step runs on worker A
    depends_on: list[list[int]] = [[], [0], [0], [1, 2]]
    first = stack.worker("a", concurrency=2)
    workflow_id, job_ids = create(stack, depends_on, 0.1, {1: {"parameters": {"seconds": 3}}})
    # (step 2's message acknowledged too: a worker lost between a step's outcome and the
    # end of its message is the reservation window of the throughput issue)
    wait_for(lambda: stack.job(job_ids[1])["status"] == "running"
             and stack.job(job_ids[2])["status"] == "completed"
             and stack.services.redis.hlen("unacked") == 1, 20,
             message="step 1 to run and step 2 to finish")

    # When A is SIGKILLed (no signal fires) and B comes up
    first.kill()
    stack.worker("b", concurrency=2)

    # Then step 1 runs again from its lease, goes on through its canvas message,
    # and the join runs once after it
    steps = finished(stack, workflow_id, timeout=60)
    assert [s["status"] for s in steps] == ["completed"] * 4
    assert (steps[1]["attempts"], steps[1]["lost"]) == (2, 1)
    assert steps[3]["attempts"] == 1
    assert steps[3]["started_at"] >= steps[1]["completed_at"]


def test_a_lost_canvas_publish_is_published_again(stack: Stack) -> None:
    # Given a stored workflow whose canvas never reached the broker (a crash
    # between the store and the publish)
    services = stack.services
    real_apply = services.workflows._apply
    services.workflows._apply = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        workflow_id, _ = create(stack, [[], [0]], 0.0)
    finally:
        services.workflows._apply = real_apply  # type: ignore[method-assign]
    assert services.redis.zscore(keys.WORKFLOW_OUTBOX, workflow_id) is not None

    # When a worker's reaper finds it in the outbox
    stack.worker("a")

    # Then the workflow runs to completion
    assert_ran_once_in_order(finished(stack, workflow_id, timeout=40), [[], [0]])
    assert services.redis.zscore(keys.WORKFLOW_OUTBOX, workflow_id) is None


def test_a_worker_that_starts_after_a_cancel_refuses_the_steps(stack: Stack) -> None:
    # Given a workflow whose messages are queued while no worker runs
    workflow_id, job_ids = create(stack, [[], [], [0, 1]], 0.0)
    assert queued(stack) == 2

    # When it is cancelled (no worker hears a revoke) and then a worker starts
    summary = stack.services.workflows.cancel(workflow_id, "tenant-a", "stop")
    assert (summary.cancelled, summary.total) == (3, 3)
    stack.worker("late")

    # Then the worker drains the messages without running any step
    wait_for(lambda: queued(stack) == 0, 20, message="the queue to drain")
    steps = finished(stack, workflow_id)
    assert [(s["status"], s["attempts"]) for s in steps] == [("cancelled", 0)] * 3
    assert json.loads(stack.services.redis.hget(keys.job(job_ids[0]), "error") or "{}")[
        "code"] == "WORKFLOW_CANCELLED"
