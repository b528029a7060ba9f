"""The lease keeper: renewals and progress from its own thread, and a run that fences itself."""

from __future__ import annotations

import time

import pytest
import redis

from tasks.core.errors import LeaseLost, StepStopped
from tasks.jobs.lease import LeaseKeeper, ProgressReporter
from tasks.jobs.lifecycle import Lease, Lifecycle
from tasks.jobs.store import JobStore
from tests.support import wait_for
from tests.tasks.conftest import new_job

FAR = 2**62


def test_progress_is_written_from_the_keepers_thread(
        store: JobStore, lifecycle: Lifecycle) -> None:
    store.create("j1", new_job(), outbox_due_ms=None)
    sent = time.monotonic()
    lifecycle.claim("j1", "tok", "w1", "m1", FAR)
    with LeaseKeeper.for_job(lifecycle, "j1", "tok", sent) as keeper:
        report = ProgressReporter("j1", keeper, interruptible=True, min_interval=0)
        report(40)
        wait_for(lambda: store.get("j1")["progress"] == 40, 2,  # type: ignore[index]
                 message="progress written")
        time.sleep(0.5)  # past the 0.3 s lease: renewals keep it
        assert not keeper.lost
        report(60)


def test_a_run_that_cannot_renew_fences_itself_before_its_lease_can_expire() -> None:
    calls: list[int | None] = []

    def unreachable(progress: int | None) -> Lease:
        calls.append(progress)
        raise redis.ConnectionError("network is unreachable")

    started = time.monotonic()
    with LeaseKeeper(unreachable, lease_seconds=0.4, name="job j1") as keeper:
        report = ProgressReporter("j1", keeper, interruptible=False, min_interval=0)
        report(10)
        fenced = wait_for(lambda: keeper.lost and time.monotonic(), 2, interval=0.01,
                          message="the keeper to fence")
        with pytest.raises(LeaseLost):
            report(20)
    assert fenced - started < 0.4, "fenced before the lease (0.4 s) could run out"
    assert calls and calls[0] == 10


def test_a_lease_taken_over_or_a_stop_request_ends_the_run_at_the_next_report() -> None:
    answers = iter([Lease.STOP, Lease.LOST])
    with LeaseKeeper(lambda _p: next(answers), lease_seconds=0.3, name="job j1") as keeper:
        report = ProgressReporter("j1", keeper, interruptible=True, min_interval=0)
        report(5)
        wait_for(lambda: keeper.stop_requested, 2, message="the stop request")
        with pytest.raises(StepStopped):
            report(6)
        wait_for(lambda: keeper.lost, 2, message="the lost lease")
        with pytest.raises(LeaseLost):
            report(7)


def test_a_lease_whose_heartbeat_breaks_is_dropped_and_the_others_go_on(
        store: JobStore, lifecycle: Lifecycle) -> None:
    def broken(_progress: int | None) -> Lease:
        raise ValueError("an answer the keeper does not know")

    store.create("j2", new_job(), outbox_due_ms=None)
    sent = time.monotonic()
    lifecycle.claim("j2", "tok", "w1", "m1", FAR)
    with LeaseKeeper(broken, lease_seconds=0.3, name="job j1") as faulty, \
            LeaseKeeper.for_job(lifecycle, "j2", "tok", sent) as healthy:
        ProgressReporter("j1", faulty, interruptible=False, min_interval=0)(10)
        wait_for(lambda: faulty.lost, 2, message="the broken lease dropped")
        report = ProgressReporter("j2", healthy, interruptible=False, min_interval=0)
        report(30)
        wait_for(lambda: store.get("j2")["progress"] == 30, 2,  # type: ignore[index]
                 message="the healthy lease's progress written")
        time.sleep(0.4)  # past its 0.3 s lease: still renewed
        assert not healthy.lost
