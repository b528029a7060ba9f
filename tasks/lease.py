"""Keeping a lease alive from a thread, and reporting a step's progress under it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from tasks.handlers.base import LeaseLost, StepStopped
from tasks.lifecycle import Lease, Lifecycle

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a lease from a thread while the work runs in the task's own thread.

    Work stuck in native code still has its lease renewed; a process that dies
    (or is SIGKILLed with its worker) stops renewing, and the reaper takes the
    work over once the lease runs out. `renew` is one heartbeat of the lease (a
    job's, or a workflow's compensation run's).
    """

    def __init__(self, renew: Callable[[], Lease], interval: float, name: str) -> None:
        self._renew_once = renew
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self.lost = False
        self.stop_requested = False

    @classmethod
    def for_job(cls, lifecycle: Lifecycle, job_id: str, token: str) -> LeaseKeeper:
        return cls(lambda: lifecycle.heartbeat(job_id, token),
                   lifecycle.policy.lease_seconds / 3, f"job {job_id}")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                lease = self._renew_once()
            except redis.RedisError:
                log.warning("could not renew the lease on %s", self._name, exc_info=True)
                continue
            if lease is Lease.LOST:
                self.lost = True
                if not self._stop.is_set():  # else the run just finished and released it
                    log.warning("lease on %s was taken over; stopping", self._name)
                return
            self.stop_requested = self.stop_requested or lease is Lease.STOP


class ProgressReporter:
    """Throttled progress writes: the point where a superseded run is stopped, and a
    step whose workflow is compensating stops when its handler allows it."""

    def __init__(self, lifecycle: Lifecycle, job_id: str, token: str, keeper: LeaseKeeper,
                 interruptible: bool, min_interval: float = 0.25) -> None:
        self._lifecycle = lifecycle
        self._job_id = job_id
        self._token = token
        self._keeper = keeper
        self._interruptible = interruptible
        self._min_interval = min_interval
        self._last_percent = -1
        self._last_time = 0.0

    def __call__(self, percent: int) -> None:
        self._check(self._keeper.stop_requested)
        now = time.monotonic()
        if percent <= self._last_percent or (
                percent < 100 and now - self._last_time < self._min_interval):
            return
        self._last_percent, self._last_time = percent, now
        try:
            lease = self._lifecycle.heartbeat(self._job_id, self._token, renew=False,
                                              progress=percent)
        except redis.RedisError:
            log.warning("progress of job %s not recorded", self._job_id, exc_info=True)
            return
        if lease is Lease.LOST:
            raise LeaseLost(self._job_id)
        self._check(lease is Lease.STOP)

    def _check(self, stop_requested: bool) -> None:
        if self._keeper.lost:
            raise LeaseLost(self._job_id)
        if stop_requested and self._interruptible:
            raise StepStopped(max(self._last_percent, 0))
