"""Keeping a running job's lease alive, and reporting progress under it."""

from __future__ import annotations

import logging
import threading
import time

import redis

from tasks.handlers.base import LeaseLost
from tasks.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the lease from a thread while the handler runs in the task's own thread.

    A handler stuck in native code still has its lease renewed; a process that
    dies (or is SIGKILLed with its worker) stops renewing, and the reaper takes
    the job over once the lease runs out.
    """

    def __init__(self, lifecycle: Lifecycle, job_id: str, token: str) -> None:
        self._lifecycle = lifecycle
        self._job_id = job_id
        self._token = token
        self._interval = lifecycle.policy.lease_seconds / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)
        self.lost = False

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._lifecycle.heartbeat(self._job_id, self._token):
                    self.lost = True
                    if not self._stop.is_set():  # else the run just finished and released it
                        log.warning("lease on job %s was taken over; stopping", self._job_id)
                    return
            except redis.RedisError:
                log.warning("could not renew the lease on job %s", self._job_id, exc_info=True)


class ProgressReporter:
    """Throttled progress writes; the point where a superseded run is stopped."""

    def __init__(self, lifecycle: Lifecycle, job_id: str, token: str, keeper: LeaseKeeper,
                 min_interval: float = 0.25) -> None:
        self._lifecycle = lifecycle
        self._job_id = job_id
        self._token = token
        self._keeper = keeper
        self._min_interval = min_interval
        self._last_percent = -1
        self._last_time = 0.0

    def __call__(self, percent: int) -> None:
        if self._keeper.lost:
            raise LeaseLost(self._job_id)
        now = time.monotonic()
        if percent <= self._last_percent or (
                percent < 100 and now - self._last_time < self._min_interval):
            return
        self._last_percent, self._last_time = percent, now
        try:
            held = self._lifecycle.heartbeat(self._job_id, self._token, renew=False,
                                             progress=percent)
        except redis.RedisError:
            log.warning("progress of job %s not recorded", self._job_id, exc_info=True)
            return
        if not held:
            raise LeaseLost(self._job_id)


