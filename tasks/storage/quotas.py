"""Per-tenant quotas: what one tenant may take of a shared fleet, checked where jobs enter.

Redis runs with `noeviction`, so a tenant that filled it would make every tenant's
writes fail; and one tenant's `priority: 100` flood would take every GPU slot.
Each tenant (operators are exempt) therefore has, from Settings:

- a ceiling on unfinished jobs (pending and waiting): 429 `QUOTA_EXCEEDED`
  (counted when the submission is admitted, so concurrent ones may pass it by
  their own size);
- a submission rate: a token bucket in Redis, `rate` requests a second with bursts
  of twice that, shared by every web process: 429 `RATE_LIMITED` with the
  seconds until a token is back. Both are one script (tasks/storage/lua/admit.lua), one round
  trip per submission;
- a priority ceiling: a job or step above it is a 400, not silently lowered;
- stored bytes (uploads and what its jobs made, until they expire): an upload past
  it is refused, and so is a submission while the tenant is past it, with the
  seconds until some of it expires. Usage is kept in hourly buckets by when the
  files expire (tasks/storage/lua/storage.lua), so counting it never lists files; a job's
  outputs are counted when written and never fail the job;
- WebSocket seats, shared by every web process (tasks/storage/lua/socket_seat.lua): a socket
  renews its seat while it lives, so a crashed process's seats free themselves;
- a longest replay per subscription (a client may not ask for a day of history
  over a socket; the paged /events endpoints serve that).

JobService (in the script that stores the job) and WorkflowService both admit every
submission, so no entry point skips it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from tasks.core import keys
from tasks.core.errors import ChordlineError, InvalidInput, TooManyRequests
from tasks.core.scripts import Scripts
from tasks.core.settings import Settings
from tasks.core.statuses import JobStatus


class QuotaExceeded(TooManyRequests):
    """Refused for now: `code` is RATE_LIMITED or QUOTA_EXCEEDED, `retry_after` seconds."""

    retry_after: int

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


def storage_exceeded(most: int, stored: int, frees_in_ms: int) -> QuotaExceeded:
    return QuotaExceeded("QUOTA_EXCEEDED", f"At most {most} bytes of images per tenant "
                         f"({stored} stored); retry when some have expired",
                         retry_after=max(1, -(-frees_in_ms // 1000)))


class Admitted(StrEnum):
    """What admit.lua, create.lua's admission and storage.lua answer: `ok`, or which
    quota refused."""

    OK = "ok"
    # Unfinished jobs (for storage.lua: stored bytes) at the tenant's limit.
    QUOTA = "quota"
    STORAGE = "storage"
    RATE = "rate"


class PriorityTooHigh(InvalidInput):
    """A priority above the tenant's ceiling."""


@dataclass(frozen=True)
class Admission:
    """One submission's quota check, as tasks/storage/lua/admit.lua's keys and arguments."""

    keys: list[str]
    args: list[Any]


class Refused(ChordlineError):
    """A script refused the submission: its outcome and detail, for `Quotas.refuse`
    (which raises the QuotaExceeded a caller sees)."""

    def __init__(self, outcome: str, detail: list[Any]) -> None:
        super().__init__(outcome, code="REFUSED")
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True)
class QuotaPolicy:
    submits_per_second: float
    max_unfinished_jobs: int
    max_priority: int
    max_websockets: int = 100
    max_replay_events: int = 10_000
    max_storage_bytes: int = 10 << 30

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaPolicy:
        """The quota namespace of the settings (CHORDLINE_QUOTA_*)."""
        return cls(settings.quota_submits_per_second, settings.quota_unfinished_jobs,
                   settings.quota_max_priority, settings.quota_websockets,
                   settings.quota_replay_events, settings.quota_storage_bytes)


# A seat lives this long unless its socket renews it (every third of it).
SEAT_SECONDS = 60


class Quotas:
    def __init__(self, client: redis.Redis, policy: QuotaPolicy) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self.policy = policy

    def check(self, admission: Admission) -> None:
        """Run an admission on its own (tasks/storage/lua/admit.lua), or raise why it was
        refused."""
        outcome, *detail = self._scripts.admit(keys=admission.keys, args=admission.args)
        self.refuse(str(outcome), detail)

    def admission(self, tenant: str, priorities: Iterable[int]) -> Admission | None:
        """What a script checks to admit one submission (None: operators are exempt); a
        job's is checked by the script that stores it (tasks/jobs/lua/create.lua), in one
        round trip."""
        if tenant == keys.ALL_TENANTS:
            return None
        priorities = list(priorities)
        if max(priorities, default=0) > self.policy.max_priority:
            raise PriorityTooHigh(f"priority must be at most {self.policy.max_priority}")
        rate = self.policy.submits_per_second
        return Admission(
            keys=[keys.quota_submits(tenant), keys.status_index(tenant, JobStatus.PENDING),
                  keys.status_index(tenant, JobStatus.WAITING), keys.quota_storage(tenant)],
            args=[rate, max(1.0, 2 * rate), len(priorities), self.policy.max_unfinished_jobs,
                  self.policy.max_storage_bytes])

    def refuse(self, outcome: str, detail: list[Any]) -> None:
        """Raise what an admission script's refusal means ('ok' passes)."""
        rate = self.policy.submits_per_second
        if outcome == Admitted.QUOTA:
            raise QuotaExceeded("QUOTA_EXCEEDED", f"At most {self.policy.max_unfinished_jobs} "
                                f"unfinished jobs per tenant ({detail[0]} now); retry when "
                                "some have finished", retry_after=10)
        if outcome == Admitted.STORAGE:
            raise storage_exceeded(self.policy.max_storage_bytes, int(detail[0]),
                                   int(detail[1]))
        if outcome == Admitted.RATE:
            raise QuotaExceeded("RATE_LIMITED", f"At most {rate:g} submissions a second per "
                                "tenant", retry_after=max(1, -(-int(detail[0]) // 1000)))

    def seat(self, tenant: str, socket_id: str) -> bool:
        """Take or renew a WebSocket seat for the tenant; False when all are taken."""
        if tenant == keys.ALL_TENANTS:
            return True
        return bool(self._scripts.socket_seat(
            keys=[keys.quota_sockets(tenant)],
            args=[socket_id, self.policy.max_websockets, SEAT_SECONDS * 1000]))

    def unseat(self, tenant: str, socket_id: str) -> None:
        self._redis.zrem(keys.quota_sockets(tenant), socket_id)

    def replay_allowed(self, tenant: str, waiting: int) -> bool:
        return tenant == keys.ALL_TENANTS or waiting <= self.policy.max_replay_events
