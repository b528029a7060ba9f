"""The worker's heartbeat: liveness in Redis, and the reaper on the same timer."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import redis

from tasks import keys
from tasks.clock import iso, now_ms
from tasks.reaper import Reaper
from tasks.scripts import Scripts
from tasks.services import Services

log = logging.getLogger(__name__)


class WorkerHeartbeat:
    """Every `heartbeat_interval`: refresh this worker's record, then run the reaper."""

    def __init__(self, services: Services, hostname: str, concurrency: int) -> None:
        self._s = services
        self._hostname = hostname
        self._info: dict[str, str | int] = {
            "hostname": hostname, "machine_id": services.settings.machine_id,
            "pid": os.getpid(), "concurrency": concurrency, "started_at": iso(),
            "queues": services.settings.queue}
        self._reaper = Reaper(services.redis, services.store, services.lifecycle,
                              services.dispatcher, services.workflows,
                              services.settings.job_retention, services.events,
                              services.settings.event_retention)
        self._scripts = Scripts(services.redis)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chordline-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and say goodbye, so the dashboard shows the worker offline at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._scripts.worker_gone(keys=[keys.worker(self._hostname), keys.WORKERS],
                                      args=[self._hostname, iso()])
        except redis.RedisError:
            log.warning("could not remove worker %s from Redis", self._hostname)

    def beat(self) -> None:
        """Refresh this worker's record; workers that died without a goodbye go offline."""
        gone = self._scripts.worker_beat(
            keys=[keys.worker(self._hostname), keys.WORKERS],
            args=[self._hostname, json.dumps(self._info), liveness_ttl(self._s), now_ms(),
                  iso()])
        for hostname in gone:
            log.warning("worker %s stopped beating: announced offline", hostname)

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


def liveness_ttl(services: Services) -> int:
    """Seconds a worker counts as alive after its last beat."""
    return max(1, round(services.settings.heartbeat_interval * 3))


def describe(services: Services) -> list[dict[str, Any]]:
    """The workers whose heartbeat is live."""
    client = services.redis
    since = now_ms() - liveness_ttl(services) * 1000
    names = [str(n) for n in client.zrangebyscore(keys.WORKERS, since, "+inf")]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
    return [info for info in pipe.execute() if info]
