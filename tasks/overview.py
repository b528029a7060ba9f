"""What an operator looks at first, read from Redis in a few round trips.

The console's Overview page, `GET /api/overview` and the gauges of `/metrics`
read this one module, so the page and the graphs never disagree: jobs and
workflows per status (the status indexes, within retention), jobs finished per
minute over the last hour (tasks/core/metrics.py), each route queue's pending jobs
and oldest wait (tasks/fleet/routes.py) beside the messages its broker lists hold,
and the fleet (tasks/fleet/machines.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis

from tasks.core import keys
from tasks.core.metrics import MetricsStore
from tasks.core.statuses import JobStatus, WorkflowStatus
from tasks.fleet.machines import MachineStore
from tasks.fleet.routes import RouteStore
from tasks.jobs.message import broker_lists


@dataclass(frozen=True)
class QueueDepth:
    """One Celery queue: the route it serves (none for the base queue), the jobs waiting
    in it for a GPU slot, since when the oldest waits, and its broker messages."""

    queue: str
    job_type: str
    model: str
    gpu_memory: int
    pending: int
    oldest_wait_seconds: float | None
    messages: int | None


class Overview:
    def __init__(self, client: redis.Redis, broker: redis.Redis | None, base_queue: str,
                 routes: RouteStore, machines: MachineStore, metrics: MetricsStore) -> None:
        self._redis = client
        self._broker = broker  # None where the broker is not Redis: no list to count
        self._base = base_queue
        self._routes = routes
        self._machines = machines
        self._metrics = metrics

    def status_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Jobs and workflows per status, across tenants (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(keys.status_index(keys.ALL_TENANTS, status))
        for wf_status in WorkflowStatus:
            pipe.zcard(keys.workflow_status_index(keys.ALL_TENANTS, wf_status))
        counts = pipe.execute()
        jobs = dict(zip(map(str, JobStatus), counts[:len(JobStatus)], strict=True))
        workflows = dict(zip(map(str, WorkflowStatus), counts[len(JobStatus):], strict=True))
        return jobs, workflows

    def queues(self, now_ms: int) -> list[QueueDepth]:
        """The base queue and every route queue, the longest waiting first."""
        routes = self._routes.registered()
        waiting = self._routes.waiting(routes)
        messages = self._messages([self._base, *(w.queue for w in waiting)])
        depths = [QueueDepth(self._base, "", "", 0, 0, None, messages[0])]
        for w, count in zip(waiting, messages[1:], strict=True):
            oldest = round((now_ms - w.oldest_ms) / 1000, 3) if w.oldest_ms else None
            depths.append(QueueDepth(w.queue, w.route.job_type, w.route.model,
                                     w.route.gpu_memory, w.pending, oldest, count))
        return sorted(depths, key=lambda d: -(d.oldest_wait_seconds or -1))

    def _messages(self, queues: list[str]) -> list[int | None]:
        if self._broker is None:
            return [None] * len(queues)
        pipe = self._broker.pipeline(transaction=False)
        for queue in queues:
            for name in broker_lists(queue):
                pipe.llen(name)
        lengths = pipe.execute()
        steps = len(lengths) // max(1, len(queues))
        return [sum(lengths[i * steps:(i + 1) * steps]) for i in range(len(queues))]

    def summary(self, now_ms: int) -> dict[str, Any]:
        """Everything the Overview page shows, as JSON."""
        jobs, workflows = self.status_counts()
        minutes = self._metrics.last_hour(now_ms)
        completed = sum(m.get("completed", 0) for m in minutes)
        failed = sum(m.get("failed", 0) for m in minutes)
        machines = self._machines.describe_all()
        return {
            "jobs": jobs, "workflows": workflows,
            "last_hour": {"completed": completed, "failed": failed,
                          "cancelled": sum(m.get("cancelled", 0) for m in minutes),
                          "failure_rate": round(failed / (completed + failed), 4)
                          if completed + failed else 0.0,
                          "per_minute": minutes},
            "queues": [asdict(q) for q in self.queues(now_ms)],
            "machines": {status: sum(1 for m in machines if m["status"] == status)
                         for status in ("online", "draining", "offline")},
            "gpus": sum(len(m["gpus"]) for m in machines if m["status"] != "offline"),
        }
