"""The saga's transitions in Redis, and the order in which steps are undone."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from tasks.core import keys
from tasks.core.events import EventLog, workflow_feed
from tasks.jobs.lifecycle import Lease, LeasePolicy, Lifecycle, Transition
from tasks.jobs.replies import TransitionReply
from tasks.jobs.store import JobStore
from tasks.workflows.saga import SagaPolicy, SagaStore, compensation_order
from tasks.workflows.store import NewStep, NewWorkflow, WorkflowStore
from tests.tasks.conftest import new_job
from tests.tasks.workflows.test_compiler import dags

FAR = 2**62
DIAMOND = [[], [0], [0], [1, 2]]


@st.composite
def completions(draw: st.DrawFn) -> tuple[list[list[int]], dict[int, int]]:
    """A DAG and the steps that completed, numbered in an order a run allows: a step
    completes only after its dependencies did."""
    depends_on = draw(dags(max_steps=20))
    completed: dict[int, int] = {}
    ready = [i for i, deps in enumerate(depends_on) if not deps]
    while ready:
        index = ready.pop(draw(st.integers(0, len(ready) - 1)))
        if not draw(st.booleans()):
            continue  # this step failed, or never ran: its dependents never run
        completed[index] = len(completed) + 1
        ready += [i for i, deps in enumerate(depends_on)
                  if index in deps and all(d in completed for d in deps)]
    return depends_on, completed


@given(completions())
def test_steps_are_undone_latest_completed_first(
        case: tuple[list[list[int]], dict[int, int]]) -> None:
    depends_on, completed = case
    assert compensation_order(depends_on, completed) == sorted(
        completed, key=completed.__getitem__, reverse=True)


@given(dags(max_steps=20), st.data())
def test_whatever_the_numbering_a_step_is_undone_after_its_dependents(
        depends_on: list[list[int]], data: st.DataObject) -> None:
    subset = data.draw(st.sets(st.integers(0, len(depends_on) - 1)))
    completed = {i: data.draw(st.integers(0, 5)) for i in subset}
    order = compensation_order(depends_on, completed)
    assert sorted(order) == sorted(completed)
    for position, index in enumerate(order):
        assert all(order.index(dep) > position for dep in depends_on[index] if dep in subset)


@pytest.fixture
def saga(client: redis.Redis) -> SagaStore:
    lease = LeasePolicy(lease_seconds=0.3, max_deliveries=2, outbox_grace=0.2, retention=3600)
    return SagaStore(client, SagaPolicy(lease, attempts=2, backoff=0.01))


@pytest.fixture
def workflows(client: redis.Redis, store: JobStore) -> WorkflowStore:
    return WorkflowStore(client, store, retention=3600)


def create(workflows: WorkflowStore, depends_on: list[list[int]]) -> list[str]:
    """A workflow of echo steps: its id, then its step ids."""
    steps = [NewStep(new_job(), tuple(deps)) for deps in depends_on]
    job_ids = [f"s{i}" for i in range(len(steps))]
    workflows.create("wf", job_ids, NewWorkflow("t1", "saga", None, "c", steps), 0)
    return job_ids


def run(lifecycle: Lifecycle, job_id: str, outcome: str = "completed") -> Transition:
    """Claim a step and finish it as `outcome` ('running' leaves it running)."""
    assert lifecycle.claim(job_id, f"tok-{job_id}", "w1", "m1", FAR).outcome == "claimed"
    if outcome == "completed":
        return lifecycle.complete(job_id, f"tok-{job_id}", {})
    if outcome == "failed":
        return lifecycle.fail(job_id, f"tok-{job_id}", "BOOM", "broke")
    return Transition(TransitionReply.OK, "running")


def status(client: redis.Redis, key: str) -> Any:
    return client.hget(key, "status")


def event_types(client: redis.Redis) -> list[str]:
    return [e["type"] for e in EventLog(client).read(workflow_feed("wf"))]


def test_parallel_failures_queue_one_compensation_once_nothing_runs(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore) -> None:
    # Given a diamond whose first step completed and whose two branches run
    create(workflows, DIAMOND)
    run(lifecycle, "s0")
    run(lifecycle, "s1", "running")
    run(lifecycle, "s2", "running")
    # When one branch fails, the saga begins but waits for the other
    first = lifecycle.fail("s1", "tok-s1", "BOOM", "broke")
    assert (first.ok, first.compensate) == (True, "")
    assert status(client, keys.workflow("wf")) == "compensating"
    assert status(client, keys.job("s3")) == "cancelled"
    assert lifecycle.heartbeat("s2", "tok-s2") is Lease.STOP
    # When the other fails too, the compensation is queued: once
    second = lifecycle.fail("s2", "tok-s2", "BOOM", "broke too")
    assert second.compensate == "wf"
    assert client.zscore(keys.SAGA_OUTBOX, "wf") is not None
    assert event_types(client).count("workflow.compensating") == 1
    assert client.hget(keys.workflow("wf"), "saga") == "queued"


def test_a_failure_with_nothing_done_fails_the_workflow_without_a_saga(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore) -> None:
    create(workflows, [[], [0]])
    outcome = run(lifecycle, "s0", "failed")
    assert outcome.compensate == ""
    assert status(client, keys.workflow("wf")) == "failed"
    assert client.zcard(keys.SAGA_OUTBOX) == 0


def test_a_running_step_of_a_compensating_workflow_is_cancelled_not_retried_or_requeued(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore) -> None:
    # Given a compensating workflow with two steps still running
    create(workflows, [[], [], [], [], [0, 1, 2, 3]])
    run(lifecycle, "s0")
    run(lifecycle, "s1", "running")
    run(lifecycle, "s2", "running")
    run(lifecycle, "s3", "failed")
    # When one asks for a retry, it is cancelled instead
    retry = lifecycle.retry("s1", "tok-s1", "FLAKY", "again", 1, 0)
    assert (retry.status, retry.compensate) == ("cancelled", "")
    assert "WORKFLOW_HALTED" in str(client.hget(keys.job("s1"), "error"))
    # When the other loses its worker, it is cancelled rather than queued again, and
    # being the last to settle it queues the compensation
    time.sleep(0.35)
    assert lifecycle.reap("s2") == "halted"
    assert status(client, keys.job("s2")) == "cancelled"
    assert client.zscore(keys.SAGA_OUTBOX, "wf") is not None


def test_a_compensation_run_holds_a_lease_that_another_takes_over_when_it_lapses(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore,
        saga: SagaStore) -> None:
    create(workflows, [[], [0]])
    run(lifecycle, "s0")
    run(lifecycle, "s1", "failed")
    assert saga.claim("wf", "first") == "claimed"
    assert saga.claim("wf", "second") == "busy"
    assert saga.attempt("wf", "s0", "first").outcome == "ok"
    time.sleep(0.35)  # the first run's worker died: its lease lapses
    assert saga.claim("wf", "second") == "claimed"
    assert saga.attempt("wf", "s0", "first").outcome == "lost"
    assert not saga.compensated("wf", "s0", "first", {})
    assert saga.renew("wf", "first") is Lease.LOST
    # The second run makes the last attempt allowed and records the step once
    attempt = saga.attempt("wf", "s0", "second")
    assert (attempt.outcome, attempt.number, attempt.used) == ("ok", 2, 2)
    assert saga.compensated("wf", "s0", "second", {"undone": True})
    assert saga.attempt("wf", "s0", "second").outcome == "done"
    assert saga.finish("wf", "second") == "ok"
    assert status(client, keys.workflow("wf")) == "compensated"
    assert client.hget(keys.workflow("wf"), "saga_lost") == "1"
    assert client.zcard(keys.SAGA_OUTBOX) == 0


def test_attempts_lost_with_their_workers_count_towards_the_limit(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore,
        saga: SagaStore) -> None:
    create(workflows, [[], [0]])
    run(lifecycle, "s0")
    run(lifecycle, "s1", "failed")
    for token in ("a", "b"):
        assert saga.claim("wf", token) == "claimed"
        assert saga.attempt("wf", "s0", token).outcome == "ok"
        time.sleep(0.35)
    assert saga.claim("wf", "c") == "claimed"
    assert saga.attempt("wf", "s0", "c").outcome == "exhausted"
    assert status(client, keys.workflow("wf")) == "compensation_failed"
    assert status(client, keys.job("s0")) == "compensation_failed"
    assert '"WORKER_LOST"' in str(client.hget(keys.workflow("wf"), "compensation_error"))


def test_a_retry_waits_out_its_backoff(
        lifecycle: Lifecycle, workflows: WorkflowStore, saga: SagaStore) -> None:
    create(workflows, [[], [0]])
    run(lifecycle, "s0")
    run(lifecycle, "s1", "failed")
    assert saga.claim("wf", "a") == "claimed"
    saga.attempt("wf", "s0", "a")
    assert saga.retry_later("wf", "s0", "a", {"code": "X", "message": "no"}, countdown=0.3)
    assert saga.claim("wf", "b") == "early"
    time.sleep(0.35)
    assert saga.claim("wf", "b") == "claimed"


def test_an_operator_restarts_only_what_ended_without_success_and_left_work(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore,
        saga: SagaStore) -> None:
    create(workflows, [[], [0]])
    assert saga.restart("wf", keys.ALL_TENANTS).outcome == "conflict"  # pending
    assert saga.restart("nope", keys.ALL_TENANTS).outcome == "missing"
    assert saga.restart("wf", "someone-else").outcome == "missing"
    workflows.cancel("wf", "t1", "stop", terminate=False, compensate=False, saga_due_ms=0)
    assert saga.restart("wf", "t1").outcome == "nothing"


def test_an_operator_undoes_a_cancelled_workflow_after_its_running_step_ends(
        client: redis.Redis, lifecycle: Lifecycle, workflows: WorkflowStore,
        saga: SagaStore) -> None:
    create(workflows, [[], [], [0, 1]])
    run(lifecycle, "s0")
    run(lifecycle, "s1", "running")
    workflows.cancel("wf", "t1", "stop", terminate=False, compensate=False, saga_due_ms=0)
    restart = saga.restart("wf", "t1")
    assert (restart.outcome, restart.status, restart.publish) == ("ok", "compensating", "")
    assert lifecycle.complete("s1", "tok-s1", {}).compensate == "wf"
    assert saga.restart("wf", "t1").outcome == "conflict"  # compensating already


def test_cancel_with_compensate_and_nothing_done_simply_cancels(
        client: redis.Redis, workflows: WorkflowStore) -> None:
    create(workflows, [[], [0]])
    outcome = workflows.cancel("wf", "t1", "stop", terminate=False, compensate=True,
                               saga_due_ms=0)
    assert (outcome.status, outcome.compensate) == ("cancelled", "")


def test_a_workflows_steps_are_kept_as_long_as_the_workflow(
        client: redis.Redis, workflows: WorkflowStore, lifecycle: Lifecycle) -> None:
    """Its history holds its steps' events: a step that finished long before the
    workflow must not expire before it."""
    create(workflows, [[], [0]])
    run(lifecycle, "s0")
    client.expire(keys.job("s0"), 10)  # as if it had finished an hour before the next
    run(lifecycle, "s1")
    assert status(client, keys.workflow("wf")) == "completed"
    assert client.ttl(keys.job("s0")) > 3000
    assert client.ttl(keys.job("s0")) <= client.ttl(keys.workflow("wf"))
