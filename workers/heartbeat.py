"""The worker's heartbeat: its record and its machine's in Redis, and the reaper on the
same timer."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis

from tasks.core.clock import iso
from tasks.fleet.profile import NodeProfile
from tasks.fleet.reservations import boot_id, instance_name
from tasks.reaper import Reaper
from tasks.services import Services
from workers.gpu import Sampler

log = logging.getLogger(__name__)


class WorkerHeartbeat:
    """Every `heartbeat_interval`: refresh this worker's record (with a fresh reading of
    its GPU) and its machine's, then run the reaper."""

    def __init__(self, services: Services, profile: NodeProfile, hostname: str,
                 concurrency: int, running: Callable[[], int]) -> None:
        self._s = services
        self._profile = profile
        self._hostname = hostname
        self._running = running
        self._sampler = Sampler(profile.gpu, profile.detected_by) if profile.gpu else None
        self._info: dict[str, str | int] = {
            "hostname": hostname, "pid": os.getpid(), "boot": boot_id(),
            "concurrency": concurrency,
            "started_at": iso(), "queues": services.settings.queue}
        self._reaper = Reaper(services.redis, services.store, services.lifecycle,
                              services.dispatcher, services.workflows,
                              services.settings.job_retention, services.events,
                              services.settings.event_retention, services.routes,
                              services.machines, services.artifacts,
                              services.settings.artifact_sweep_interval,
                              services.reservations)
        self._instance = instance_name(hostname)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chordline-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and say goodbye, so the dashboard shows the worker offline at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self._s.reservations is not None:  # kombu gives back what it held, on close
            try:
                self._s.reservations.forget(self._instance)
            except redis.RedisError:
                log.warning("could not forget what worker %s held", self._hostname)
        try:
            self._s.machines.gone(self._hostname)
        except redis.RedisError:
            log.warning("could not remove worker %s from Redis", self._hostname)

    def beat(self) -> None:
        """Refresh this worker's record; workers that died without a goodbye go offline."""
        profile = self._profile
        if self._sampler is not None:
            profile = profile.with_gpu(self._sampler.sample())
        gone = self._s.machines.beat(self._hostname, self._info, profile,
                                     self._update(profile))
        for hostname in gone:
            log.warning("worker %s stopped beating: announced offline", hostname)
        if self._s.reservations is not None:
            self._s.reservations.prune(self._instance)

    def _update(self, profile: NodeProfile) -> dict[str, Any]:
        """What machine.updated says of this worker (coarse, so noise says nothing)."""
        gpu = profile.gpu
        free = gpu.memory_free_mb if gpu else None
        return {"gpu_index": gpu.index if gpu else None, "running_jobs": self._running(),
                "memory_free_mb": None if free is None else free // 256 * 256,
                "utilization": None if not gpu or gpu.utilization is None
                else gpu.utilization // 10 * 10}

    def _loop(self) -> None:
        interval = min(self._s.settings.heartbeat_interval, self._s.settings.reaper_interval)
        while True:
            for step in (self.beat, self._reaper.tick):
                try:
                    step()
                except Exception:
                    log.warning("worker heartbeat step failed", exc_info=True)
            if self._stop.wait(interval):
                return
