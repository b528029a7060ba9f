"""Keeping a lease alive from a thread, and reporting a step's progress under it."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import redis

from tasks.handlers.base import LeaseLost, StepStopped
from tasks.lifecycle import Lease, Lifecycle

log = logging.getLogger(__name__)

# A run that has not renewed its lease for this share of the lease stops itself
# (below), well before the reaper, which waits for the whole lease, can requeue it.
FENCE = 0.75
# How soon a renewal that failed is tried again (seconds, at most).
RETRY_AFTER = 1.0

# One heartbeat: renew the lease and, when given, record progress (0-100).
Heartbeat = Callable[[int | None], Lease]


class LeaseKeeper:
    """Renews a lease and writes progress from a thread while the work runs in the
    task's own thread, which never waits on Redis for either.

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
        # Reports not yet written, in order: each becomes one job.progress event.
        self._progress: deque[int] = deque(maxlen=1000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)
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
        """Record progress soon, from the keeper's thread."""
        self._progress.append(percent)
        self._wake.set()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        # A heartbeat stuck on an unreachable Redis must not hold the task up.
        self._thread.join(timeout=RETRY_AFTER)

    def _run(self) -> None:
        due = self._renewed_at + self._interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            progress = self._progress.popleft() if self._progress else None
            if self._progress:
                self._wake.set()  # more to write: go round again at once
            if self._stop.is_set() or (progress is None and time.monotonic() < due):
                continue
            sent = time.monotonic()
            try:
                lease = self._heartbeat(progress)
            except redis.RedisError:
                log.warning("could not renew the lease on %s", self._name, exc_info=True)
                if progress is not None:
                    self._progress.appendleft(progress)
                due = time.monotonic() + min(self._interval, RETRY_AFTER)
                continue
            if lease is Lease.LOST:
                self._lost = True
                if not self._stop.is_set():  # else the run just finished and released it
                    log.warning("lease on %s was taken over; stopping", self._name)
                return
            self._renewed_at, due = sent, sent + self._interval
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
