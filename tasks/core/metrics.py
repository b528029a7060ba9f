"""Fleet-wide counts kept in Redis: what `/metrics` and the console's overview read.

Job and workflow counts are written by the same Lua step that changes a status
(`count_status` and `observe`, tasks/core/lua/prelude/3_records.lua), so a count can
never disagree with the record, whichever process (API, worker, reaper) made the
change, and a restart of any of them loses nothing. Celery-level task outcomes are counted by each
worker process and added here in batches (workers/telemetry.py).

The layout, in a few hashes whose size is bounded by the number of job types,
statuses and buckets, never by the number of jobs:

- `COUNTS`: `job|<status>|<type>` and `workflow|<status>` -> transitions into a
  terminal status (and `submitted`, for a record's first status);
- `HISTOGRAMS`: `<name>|<type>|<i>` -> observations in bucket i (not
  cumulative), `<name>|<type>|sum` -> their sum in seconds;
- `EVENTS`: event type -> events published;
- `CELERY`: `<task>|<state>` -> Celery task outcomes;
- `minute:<epoch minute>`: `<status>` -> jobs finished in that minute (two
  hours kept), for the last hour's throughput and failure rate.

The price is one HINCRBY per counted transition inside scripts that already run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import redis

from tasks.core import keys
from tasks.core.statuses import JobStatus

COUNTS = keys.METRICS_COUNTS
HISTOGRAMS = keys.METRICS_HISTOGRAMS
EVENTS = keys.METRICS_EVENTS
CELERY = keys.METRICS_CELERY
MINUTE_PREFIX = keys.METRICS_MINUTE_PREFIX
MINUTE_TTL_SECONDS = 2 * 3600
SUBMITTED = "submitted"
JOB_OUTCOMES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED)

# Upper bounds in seconds: a step of a GPU pipeline runs for seconds to minutes,
# and a job waits for a GPU from milliseconds (warm, free) to many minutes.
BUCKETS: dict[str, tuple[float, ...]] = {
    "run": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    "queue_wait": (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
}


def lua_prelude() -> str:
    """The key names and bucket bounds the scripts count with (defined here only)."""
    buckets = ", ".join(f"{name} = {{{', '.join(map(str, bounds))}}}"
                        for name, bounds in BUCKETS.items())
    return (f"local METRICS_COUNTS = '{COUNTS}'\n"
            f"local METRICS_HISTOGRAMS = '{HISTOGRAMS}'\n"
            f"local METRICS_EVENTS = '{EVENTS}'\n"
            f"local METRICS_MINUTE = '{MINUTE_PREFIX}'\n"
            f"local METRICS_MINUTE_TTL = {MINUTE_TTL_SECONDS}\n"
            f"local BUCKETS = {{{buckets}}}\n")


@dataclass(frozen=True)
class Histogram:
    """One histogram series: cumulative bucket counts (Prometheus' shape), sum and count."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, the last one +Inf; not cumulative
    total: float

    def cumulative(self) -> Iterator[tuple[float, int]]:
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            yield bound, running

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Snapshot:
    """Every Redis-kept count, read in one round trip."""

    counts: Mapping[str, int]
    histograms: Mapping[tuple[str, str], Histogram]
    events: Mapping[str, int]
    celery: Mapping[str, int]

    def jobs(self, status: str) -> dict[str, int]:
        """Transitions into `status` (or `submitted`), by job type."""
        prefix = f"job|{status}|"
        return {k[len(prefix):]: v for k, v in self.counts.items() if k.startswith(prefix)}

    def workflows(self, status: str) -> int:
        return self.counts.get(f"workflow|{status}", 0)


class MetricsStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def snapshot(self) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        for key in (COUNTS, HISTOGRAMS, EVENTS, CELERY):
            pipe.hgetall(key)
        counts, hist, events, celery = cast(list[dict[str, str]], pipe.execute())
        return Snapshot(_ints(counts), _histograms(hist), _ints(events), _ints(celery))

    def add_celery(self, counts: Mapping[str, int]) -> None:
        """Add a worker process's batch of Celery task outcomes (`task|state` -> n)."""
        pipe = self._redis.pipeline(transaction=False)
        for field, n in counts.items():
            pipe.hincrby(CELERY, field, n)
        pipe.execute()

    def last_hour(self, now_ms: int) -> list[dict[str, int]]:
        """Jobs finished per minute over the last hour, oldest minute first."""
        minute = now_ms // 60_000
        minutes = range(minute - 59, minute + 1)
        pipe = self._redis.pipeline(transaction=False)
        for m in minutes:
            pipe.hgetall(f"{MINUTE_PREFIX}{m}")
        rows = cast(list[dict[str, str]], pipe.execute())
        return [{"minute": m * 60, **_ints(row)} for m, row in zip(minutes, rows, strict=True)]


def _ints(raw: Mapping[str, str]) -> dict[str, int]:
    return {k: int(float(v)) for k, v in raw.items()}


def _histograms(raw: Mapping[str, str]) -> dict[tuple[str, str], Histogram]:
    """`name|type|i` and `name|type|sum` fields, folded into one Histogram per (name, type)."""
    series: dict[tuple[str, str], dict[str, float]] = {}
    for field, value in raw.items():
        name, _, rest = field.partition("|")
        job_type, _, slot = rest.rpartition("|")
        if name in BUCKETS and job_type:
            series.setdefault((name, job_type), {})[slot] = float(value)
    return {key: _histogram(BUCKETS[key[0]], slots) for key, slots in series.items()}


def _histogram(bounds: tuple[float, ...], slots: Mapping[str, float]) -> Histogram:
    counts = tuple(int(slots.get(str(i), 0)) for i in range(1, len(bounds) + 2))
    return Histogram(bounds, counts, slots.get("sum", 0.0))

