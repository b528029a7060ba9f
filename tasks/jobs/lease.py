"""Keeping leases alive from one thread per process, and reporting a step's progress."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import redis

from tasks.core.errors import LeaseLost, StepStopped
from tasks.jobs.lifecycle import Lease, Lifecycle

log = logging.getLogger(__name__)

# A run that has not renewed its lease for this share of the lease stops itself
# (below), well before the reaper, which waits for the whole lease, can requeue it.
FENCE = 0.75
# How soon a renewal that failed is tried again (seconds, at most).
RETRY_AFTER = 1.0
# The renewer looks at its leases at least this often (seconds), so that a new lease
# due later wakes nobody: a short job comes and goes without a thread switch.
IDLE_TICK = 1.0

# One heartbeat: renew the lease and, when given, record progress (0-100).
Heartbeat = Callable[[int | None], Lease]


class _Renewer:
    """The one thread of a process that renews its leases and writes their progress.

    A thread per run cost a short job a fifth of its pool process's time (starting
    it, and joining it); leases come and go here instead. Forked children start
    with none (a pool process is forked from its worker).
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._wake = threading.Condition()
        self._keepers: set[LeaseKeeper] = set()
        self._thread: threading.Thread | None = None
        # When (monotonic) the renewer looks again by itself.
        self._wake_at = 0.0

    def add(self, keeper: LeaseKeeper) -> None:
        with self._wake:
            self._keepers.add(keeper)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer",
                                                daemon=True)
                self._thread.start()
            if keeper.next_due() < self._wake_at:
                self._wake.notify()

    def remove(self, keeper: LeaseKeeper) -> None:
        with self._wake:
            self._keepers.discard(keeper)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [k for k in self._keepers if k.next_due() <= now]
                if not due:
                    soonest = min((k.next_due() for k in self._keepers), default=now + IDLE_TICK)
                    self._wake_at = min(soonest, now + IDLE_TICK)
                    self._wake.wait(self._wake_at - now)
                    continue
            for keeper in due:  # outside the lock: a heartbeat may wait on Redis
                try:
                    keeper.tick()
                except Exception:  # one lease's fault must not stop every other renewal
                    log.exception("renewing a lease failed; dropping it")
                    keeper.drop()


_RENEWER = _Renewer()


class LeaseKeeper:
    """Renews a lease and writes progress from the process's renewer thread, while the
    work runs in the task's own thread, which never waits on Redis for either.

    Work stuck in native code still has its lease renewed; a process that dies
    (or is SIGKILLed with its worker) stops renewing, and the reaper takes the
    work over once the lease runs out. A process cut off from Redis cannot hear
    that, so it fences itself: once it has gone `FENCE` of the lease without a
    successful renewal, it counts its lease as lost and the run stops at its next
    progress report, before any other worker can have been handed the work.
    """

    def __init__(self, heartbeat: Heartbeat, lease_seconds: float, name: str,
                 renewed_at: float | None = None) -> None:
        self._heartbeat = heartbeat
        self._interval = lease_seconds / 3
        self._fence_after = lease_seconds * FENCE
        self._name = name
        self._renewed_at = time.monotonic() if renewed_at is None else renewed_at
        self._due = self._renewed_at + self._interval
        # After a failed write, progress waits until then (a renewal waits for `_due`).
        self._hold_until = 0.0
        # Reports not yet written, in order: each becomes one job.progress event.
        self._progress: deque[int] = deque(maxlen=1000)
        self._stopped = False
        self._lost = False
        self.stop_requested = False

    @classmethod
    def for_job(cls, lifecycle: Lifecycle, job_id: str, token: str,
                renewed_at: float) -> LeaseKeeper:
        """`renewed_at`: when (monotonic) the claim that set the lease was sent."""
        return cls(lambda progress: lifecycle.heartbeat(job_id, token, progress=progress),
                   lifecycle.policy.lease_seconds, f"job {job_id}", renewed_at)

    @property
    def lost(self) -> bool:
        """Taken over, or possibly expired while Redis could not be reached."""
        return self._lost or time.monotonic() - self._renewed_at > self._fence_after

    def report(self, percent: int) -> None:
        """Record progress soon, from the renewer's thread."""
        self._progress.append(percent)
        _RENEWER.wake()

    def __enter__(self) -> LeaseKeeper:
        _RENEWER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        # A heartbeat in flight may still land: the finished run released the lease,
        # so it is refused (heartbeat.lua checks the token).
        self._stopped = True
        _RENEWER.remove(self)

    def drop(self) -> None:
        """Count the lease as lost (taken over, or its heartbeat broke): the run stops at
        its next progress report."""
        self._lost = True
        _RENEWER.remove(self)

    def next_due(self) -> float:
        """When the renewer should call `tick` (monotonic)."""
        return self._hold_until if self._progress else self._due

    def tick(self) -> None:
        """Write the oldest progress report, or renew the lease when it is due."""
        if self._stopped:
            return
        progress = self._progress.popleft() if self._progress else None
        if progress is None and time.monotonic() < self._due:
            return
        sent = time.monotonic()
        try:
            lease = self._heartbeat(progress)
        except redis.RedisError:
            log.warning("could not renew the lease on %s", self._name, exc_info=True)
            if progress is not None:
                self._progress.appendleft(progress)
            self._due = self._hold_until = time.monotonic() + min(self._interval, RETRY_AFTER)
            return
        if lease is Lease.LOST:
            if not self._stopped:  # else the run just finished and released it
                log.warning("lease on %s was taken over; stopping", self._name)
            self.drop()
            return
        self._renewed_at, self._due, self._hold_until = sent, sent + self._interval, 0.0
        self.stop_requested = self.stop_requested or lease is Lease.STOP


class ProgressReporter:
    """Throttled progress reports: the point where a run whose lease is lost stops, and
    a step whose workflow is compensating stops when its handler allows it."""

    def __init__(self, job_id: str, keeper: LeaseKeeper, interruptible: bool,
                 min_interval: float = 0.25) -> None:
        self._job_id = job_id
        self._keeper = keeper
        self._interruptible = interruptible
        self._min_interval = min_interval
        self._last_percent = -1
        self._last_time = 0.0

    def __call__(self, percent: int) -> None:
        if self._keeper.lost:
            raise LeaseLost(self._job_id)
        if self._keeper.stop_requested and self._interruptible:
            raise StepStopped(max(self._last_percent, 0))
        now = time.monotonic()
        if percent <= self._last_percent or (
                percent < 100 and now - self._last_time < self._min_interval):
            return
        self._last_percent, self._last_time = percent, now
        self._keeper.report(percent)
