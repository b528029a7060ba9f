"""Celery-level task outcomes (what celery-exporter would count), for /metrics.

Each process counts in memory (a task's signals fire in the pool process that
ran it, a revoke in the main process) and adds its counts to Redis in one round
trip at most once a second, from a thread of its own, so a task pays for a dict
increment, not a network write. A process that is SIGKILLed loses at most its
last second of counts; a job's own counts (tasks/core/metrics.py) are exact regardless.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter

import redis

from tasks.core.metrics import MetricsStore

log = logging.getLogger(__name__)


class TaskCounts:
    def __init__(self, store: MetricsStore, interval: float = 1.0) -> None:
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._flusher_pid: int | None = None
        # A pool process forked from the main one must not send the parent's counts
        # again, nor inherit a lock its flusher thread held at the fork.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pending = Counter()
        self._flusher_pid = None

    def count(self, task: str, state: str) -> None:
        with self._lock:
            self._pending[f"{task}|{state}"] += 1
            if self._flusher_pid != os.getpid():  # none yet, or it stayed in the parent
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._run, name="chordline-task-counts",
                                 daemon=True).start()

    def _run(self) -> None:
        event = threading.Event()
        while not event.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, Counter()
        if not batch:
            return
        try:
            self._store.add_celery(batch)
        except redis.RedisError:
            log.warning("could not add %d task counts to Redis; kept for the next try",
                        sum(batch.values()))
            with self._lock:
                self._pending.update(batch)
