"""An outbox: what must reach the broker, scored by when to publish it (again).

Jobs, workflows and sagas each keep one (keys.OUTBOX, keys.WORKFLOW_OUTBOX,
keys.SAGA_OUTBOX), the way RQ keeps one class per kind of registry. A record enters
its outbox in the same script that stores it, due a grace period later; it leaves
once the broker has its message; and the reaper (tasks/reaper.py) publishes what is
due, so a crash between storing and publishing loses nothing.
"""

from __future__ import annotations

import redis

from tasks.core.clock import now_ms


class Outbox:
    """One sorted set of ids, each scored by the time (ms) it is due."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self.key = key

    def due(self, limit: int = 100) -> list[str]:
        """The ids due by now, soonest first."""
        return [str(i) for i in self._redis.zrangebyscore(self.key, "-inf", now_ms(), 0, limit)]

    def published(self, ident: str) -> None:
        """The broker has its message: the outbox no longer needs to cover it."""
        self._redis.zrem(self.key, ident)

    def delay(self, ident: str, due_ms: int, *, only_later: bool = False) -> None:
        """Look again at `due_ms` if it is still here (`only_later`: unless it is already
        due later, as a run's lease or a retry's backoff may say)."""
        self._redis.zadd(self.key, {ident: due_ms}, xx=True, gt=only_later)
