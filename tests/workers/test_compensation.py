"""Saga compensation on a real worker and Redis: what is undone, in which order, once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from app.embedded_redis import RedisServer
from tasks.core.events import workflow_feed
from tests.support import WORKFLOW_DONE, wait_for
from tests.workers.conftest import Stack, shared_stack

pytestmark = pytest.mark.slow
CHAIN = [[], [0], [1], [2], [3], [4]]
DIAMOND = [[], [0], [0], [1, 2]]


@pytest.fixture(scope="module")
def saga_stack(tmp_path_factory: pytest.TempPathFactory,
               redis_server: RedisServer) -> Iterator[Stack]:
    """A stack whose compensations retry once."""
    with shared_stack(tmp_path_factory, redis_server, "saga", concurrency=4,
                      CHORDLINE_COMPENSATION_RETRIES="1") as stack:
        yield stack


def echo(index: int, depends_on: list[int], **parameters: Any) -> dict[str, Any]:
    return {"type": "echo", "parameters": {"value": index, **parameters},
            "depends_on": depends_on, "retries": 0}


def create(stack: Stack, steps: list[dict[str, Any]]) -> str:
    workflow = stack.services.workflows.create(
        "tenant-a", {"name": "saga", "priority": 50, "steps": steps}, "saga-test")
    return workflow.id


def settled(stack: Stack, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    """The workflow once final, with its steps."""
    store = stack.services.workflow_store
    wait_for(lambda: (w := store.get(workflow_id)) is not None and w["status"] in WORKFLOW_DONE,
             timeout, interval=0.1, message=f"workflow {workflow_id} to end")
    workflow = store.get(workflow_id)
    assert workflow is not None
    return {**workflow.fields,
            "steps": [dict(job.fields) for job in store.steps(workflow) if job is not None]}


def events(stack: Stack, workflow_id: str) -> list[dict[str, Any]]:
    return list(stack.services.events.read_all(workflow_feed(workflow_id)))


def run_to_end(stack: Stack, steps: list[dict[str, Any]],
               timeout: float = 60) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create a workflow and wait for its end: the workflow with its steps, and its events."""
    workflow_id = create(stack, steps)
    return settled(stack, workflow_id, timeout), events(stack, workflow_id)


def indices(history: list[dict[str, Any]], event_type: str) -> list[int]:
    """The step index of each event of a type, in event order."""
    return [e["step_index"] for e in history if e["type"] == event_type]


def assert_undone_exactly_what_completed(history: list[dict[str, Any]],
                                         depends_on: list[list[int]]) -> list[int]:
    """Every step that completed is compensated once, latest-completed first, and never
    before a completed step that depends on it; returns the compensation order."""
    completed = indices(history, "job.completed")
    undone = indices(history, "step.compensated")
    assert sorted(undone) == sorted(completed)
    assert undone == list(reversed(completed))
    for position, index in enumerate(undone):
        for dep in depends_on[index]:
            if dep in undone:
                assert undone.index(dep) > position, (index, dep, undone)
    return undone


def with_failure(depends_on: list[list[int]], failing: int) -> list[dict[str, Any]]:
    return [{"type": "fail", "parameters": {"message": f"step {i} broke"}, "depends_on": deps,
             "retries": 0} if i == failing else echo(i, deps)
            for i, deps in enumerate(depends_on)]


@pytest.mark.parametrize("failing", range(len(CHAIN)))
def test_a_failure_anywhere_in_a_chain_undoes_the_steps_before_it_in_reverse(
        saga_stack: Stack, failing: int) -> None:
    workflow, history = run_to_end(saga_stack, with_failure(CHAIN, failing))
    statuses = [s["status"] for s in workflow["steps"]]
    assert statuses == ["compensated"] * failing + ["failed"] + ["cancelled"] * (5 - failing)
    assert_undone_exactly_what_completed(history, CHAIN)
    assert indices(history, "step.compensated") == list(reversed(range(failing)))
    assert all(s.get("compensation_attempts") == 1 for s in workflow["steps"][:failing])
    types = [e["type"] for e in history]
    if failing == 0:
        # Nothing was done, so there is nothing to undo: the workflow simply failed.
        assert workflow["status"] == "failed" and "workflow.compensating" not in types
        return
    assert workflow["status"] == "compensated"
    assert workflow["error"]["step_index"] == failing
    assert types.count("workflow.compensating") == 1
    assert types.index("job.failed") < types.index("workflow.compensating")
    assert types[-1] == "workflow.compensated"
    assert history[-1]["data"] == {"compensated_steps": failing}
    assert workflow["saga_runs"] == 1


@pytest.mark.parametrize("failing", range(len(DIAMOND)))
def test_a_failure_anywhere_in_a_diamond_undoes_what_completed_latest_first(
        saga_stack: Stack, failing: int) -> None:
    workflow, history = run_to_end(saga_stack, with_failure(DIAMOND, failing))
    undone = assert_undone_exactly_what_completed(history, DIAMOND)
    assert workflow["steps"][failing]["status"] == "failed"
    assert all(s["status"] != "completed" for s in workflow["steps"])
    assert all(s.get("compensation_attempts") == 1 for s in workflow["steps"]
               if s["step_index"] in undone)
    assert workflow["status"] == ("compensated" if undone else "failed")
    if failing == 3:
        assert undone[-1] == 0 and sorted(undone[:2]) == [1, 2]


@pytest.mark.parametrize("failing, code", [
    ({"type": "sleep", "parameters": {"seconds": 30}, "timeout_seconds": 1}, "JOB_TIMEOUT"),
    ({"type": "flaky", "parameters": {"fail_times": 5}, "retries": 1}, "HANDLER_ERROR"),
], ids=["timed-out", "retries-exhausted"])
def test_a_step_fails_for_good_by_timing_out_or_using_up_its_retries(
        saga_stack: Stack, failing: dict[str, Any], code: str) -> None:
    workflow, history = run_to_end(saga_stack, [echo(0, []), {
        "retries": 0, **failing, "depends_on": [0]}])
    assert [s["status"] for s in workflow["steps"]] == ["compensated", "failed"]
    assert workflow["steps"][1]["error"]["code"] == code
    assert indices(history, "step.compensated") == [0]
    assert workflow["status"] == "compensated"


def test_two_parallel_failures_start_one_compensation(saga_stack: Stack) -> None:
    # Given two branches that fail at the same moment after a completed step
    fail = {"type": "fail", "parameters": {"seconds": 1.5}, "retries": 0}
    workflow, history = run_to_end(saga_stack, [
        echo(0, []), {**fail, "depends_on": [0]}, {**fail, "depends_on": [0]}, echo(3, [1, 2])])
    # Then the first failure begins the saga, and it waits for the other to settle
    assert [s["status"] for s in workflow["steps"]] == [
        "compensated", "failed", "failed", "cancelled"]
    compensating = [e for e in history if e["type"] == "workflow.compensating"]
    assert len(compensating) == 1
    first = compensating[0]["data"]["error"]["step_index"]
    assert compensating[0]["data"]["running_steps"] == [3 - first]
    assert indices(history, "step.compensated") == [0]
    assert workflow["saga_runs"] == 1


def test_a_running_step_that_may_stop_is_stopped_and_cancelled(
        saga_stack: Stack) -> None:
    workflow, history = run_to_end(saga_stack, [
        echo(0, []),
        {"type": "sleep", "parameters": {"seconds": 30}, "depends_on": [0], "retries": 0},
        {"type": "fail", "parameters": {"seconds": 2}, "depends_on": [0], "retries": 0}],
        timeout=20)
    stopped = workflow["steps"][1]
    assert [s["status"] for s in workflow["steps"]] == ["compensated", "cancelled", "failed"]
    assert stopped["error"]["code"] == "STEP_STOPPED"
    assert indices(history, "step.compensated") == [0]


def test_a_running_step_that_may_not_stop_is_compensated_after_it_finishes(
        saga_stack: Stack) -> None:
    workflow, history = run_to_end(saga_stack, [
        echo(0, []),
        {"type": "sleep", "parameters": {"seconds": 3, "interruptible": False},
         "depends_on": [0], "retries": 0},
        {"type": "fail", "parameters": {"seconds": 1}, "depends_on": [0], "retries": 0}],
        timeout=20)
    assert [s["status"] for s in workflow["steps"]] == ["compensated", "compensated", "failed"]
    assert indices(history, "step.compensated") == [1, 0]
    moments = [(e["type"], e["step_index"]) for e in history]
    assert moments.index(("workflow.compensating", None)) < moments.index(("job.completed", 1))


def test_a_failing_compensation_ends_compensation_failed_naming_the_step(
        saga_stack: Stack) -> None:
    workflow, history = run_to_end(saga_stack, [
        echo(0, [], compensation="fail"), echo(1, [0]), with_failure([[], [0], [1]], 2)[2]])
    assert workflow["status"] == "compensation_failed"
    assert [s["status"] for s in workflow["steps"]] == [
        "compensation_failed", "compensated", "failed"]
    error = workflow["compensation_error"]
    assert (error["code"], error["step_index"]) == ("COMPENSATION_FAILED", 0)
    assert error["cause"]["message"] == "compensation failed on attempt 2"
    assert workflow["steps"][0]["compensation_attempts"] == 2  # one try and one retry
    assert [e["type"] for e in history[-2:]] == ["step.compensation_failed",
                                                 "workflow.compensation_failed"]
    assert history[-1]["data"]["error"] == error


def test_an_operator_retry_compensates_what_is_left_and_nothing_twice(
        saga_stack: Stack) -> None:
    # Given a compensation that fails its first three attempts (a run makes two)
    workflow_id = create(saga_stack, [
        echo(0, [], compensation_failures=3), echo(1, [0]), with_failure([[], [0], [1]], 2)[2]])
    assert settled(saga_stack, workflow_id)["status"] == "compensation_failed"
    # When an operator retries it
    assert saga_stack.services.workflows.compensate(workflow_id, "tenant-a") == "compensating"
    workflow = settled(saga_stack, workflow_id)
    # Then it succeeds on the fourth attempt, and step 1 was undone only once
    history = events(saga_stack, workflow_id)
    assert workflow["status"] == "compensated"
    assert [s["status"] for s in workflow["steps"]] == ["compensated", "compensated", "failed"]
    assert indices(history, "step.compensated") == [1, 0]
    assert [s.get("compensation_attempts") for s in workflow["steps"][:2]] == [4, 1]
    assert workflow.get("compensation_error") is None
    assert [e["type"] for e in history].count("workflow.compensating") == 2


def test_a_worker_killed_during_compensation_is_taken_over_without_undoing_twice(
        stack: Stack) -> None:
    # Given a chain of four slow-to-undo steps whose fifth step fails
    worker = stack.worker("doomed")
    steps = [echo(i, [i - 1] if i else [], compensation_seconds=1.0) for i in range(4)]
    workflow_id = create(stack, [*steps, with_failure(CHAIN[:5], 4)[4]])
    store = stack.services.store
    # When the worker is SIGKILLed while undoing step 2 (step 3 is already undone)
    workflow = stack.services.workflow_store.get(workflow_id)
    assert workflow is not None
    job_ids = workflow.job_ids
    wait_for(lambda: (j := store.get(job_ids[2])) is not None
             and j.get("compensation_attempts") == 1, 30, message="step 2's compensation")
    worker.kill()
    assert store.get(job_ids[2]).status == "completed"  # type: ignore[union-attr]
    # Then another worker takes the compensation over once its lease runs out
    stack.worker("rescuer")
    final = settled(stack, workflow_id, timeout=60)
    history = events(stack, workflow_id)
    assert final["status"] == "compensated"
    assert indices(history, "step.compensated") == [3, 2, 1, 0]
    assert Counter(indices(history, "step.compensated")) == Counter({0: 1, 1: 1, 2: 1, 3: 1})
    # Step 3 was not undone again; step 2's interrupted attempt was made once more
    assert [s.get("compensation_attempts") for s in final["steps"][:4]] == [1, 1, 2, 1]
    assert (final["saga_runs"], final["saga_lost"]) == (2, 1)
