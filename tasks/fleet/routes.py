"""Routes in Redis: which queues exist, what waits in each, and how long work takes there.

A job's route is fixed when it is created (tasks/fleet/offers.py); the scripts register
it whenever one of its jobs becomes pending and keep its pending jobs in a set
scored by when each began to wait (`track_route`, tasks/core/lua/prelude/3_records.lua).
Workers read this to choose what to pull (tasks/fleet/placement.py); a sweep explains the routes no
online machine can run, and forgets the ones nobody has used for a long time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import cast

import redis

from tasks.core import keys
from tasks.core.clock import iso
from tasks.core.scripts import Scripts
from tasks.fleet.offers import Offer, Requirements, Route, label_pairs, unplaceable
from tasks.fleet.placement import Estimates, Waiting

# Weight of a new measurement in the running estimates.
EWMA_WEIGHT = 0.3


def route_for(job_type: str, requirements: Requirements) -> Route:
    """The route of a job with these (merged) requirements."""
    return Route(job_type, requirements.gpu_memory, requirements.model,
                 label_pairs(requirements.labels))


def _routes(raw: Mapping[str, str]) -> dict[str, Route]:
    return {queue: Route.from_dict(json.loads(spec)) for queue, spec in raw.items()}


def _estimates(raw: Mapping[str, str]) -> Estimates:
    run = {k[4:]: float(v) for k, v in raw.items() if k.startswith("run:")}
    load = {k[5:]: float(v) for k, v in raw.items() if k.startswith("load:")}
    return Estimates(run, load)


def route_fields(route: Route, base_queue: str) -> dict[str, str]:
    """What a job hash holds for the scripts to track its route (until it is final)."""
    return {"route": route.queue(base_queue), "route_spec": json.dumps(route.as_dict())}


class RouteStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._scripts = Scripts(client)

    def registered(self) -> dict[str, Route]:
        """Every known route, by queue."""
        return _routes(cast(dict[str, str], self._redis.hgetall(keys.ROUTES)))

    def registered_and_estimates(self) -> tuple[dict[str, Route], Estimates]:
        """Both, in one round trip (what a GPU slot reads before it pulls again)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.ROUTES)
        pipe.hgetall(keys.ESTIMATES)
        routes, estimates = cast(list[dict[str, str]], pipe.execute())
        return _routes(routes), _estimates(estimates)

    def waiting(self, routes: Mapping[str, Route]) -> list[Waiting]:
        """How many jobs wait in each route, and since when the oldest (one round trip)."""
        queues = sorted(routes)
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            pending = keys.route_pending(queue)
            pipe.zcard(pending)
            pipe.zrange(pending, 0, 0, withscores=True)
        replies = pipe.execute()
        return [Waiting(routes[q], q, int(count), int(oldest[0][1]) if oldest else None)
                for q, count, oldest in zip(queues, replies[::2], replies[1::2], strict=True)]

    def estimates(self) -> Estimates:
        return _estimates(cast(dict[str, str], self._redis.hgetall(keys.ESTIMATES)))

    def record_run(self, queue: str, seconds: float) -> None:
        self._record(f"run:{queue}", seconds)

    def record_load(self, model: str, seconds: float) -> None:
        self._record(f"load:{model}", seconds)

    def _record(self, name: str, seconds: float) -> None:
        self._scripts.estimate(keys=[keys.ESTIMATES], args=[name, seconds, EWMA_WEIGHT])

    def explain_all(self, offers: Sequence[Offer], limit: int = 1000) -> int:
        """Say why the pending jobs of each route wait (or that they no longer do), given
        the online workers' offers; returns how many jobs changed.

        Only what can have changed is visited: every pending job of a route whose
        reason changed, else the jobs that became pending since the last sweep."""
        routes = self.registered()
        swept = {q: json.loads(v) for q, v in
                 cast(dict[str, str], self._redis.hgetall(keys.ROUTES_EXPLAINED)).items()}
        changed = 0
        for w in self.waiting(routes):
            reason = unplaceable(w.route, offers) or ""
            before = swept.get(w.queue, {"reason": "", "until": 0})
            if not w.pending and not reason:
                if w.queue in swept:
                    self._redis.hdel(keys.ROUTES_EXPLAINED, w.queue)
                continue
            since = 0 if reason != before["reason"] else before["until"]
            entries = cast(list[tuple[str, float]], self._redis.zrangebyscore(
                keys.route_pending(w.queue), f"({since}", "+inf", 0, limit, withscores=True))
            changed += self._explain([str(j) for j, _ in entries], reason)
            after = {"reason": reason,
                     "until": int(entries[-1][1]) if entries else before["until"]}
            if after != before:
                self._redis.hset(keys.ROUTES_EXPLAINED, w.queue, json.dumps(after))
        return changed

    def _explain(self, job_ids: Sequence[str], reason: str) -> int:
        if not job_ids:
            return 0
        return int(self._scripts.route_explain(keys=[keys.job(j) for j in job_ids],
                                               args=[reason, iso()]))

    def forget_idle(self, cutoff_ms: int) -> int:
        """Forget the routes unused since `cutoff_ms` with nothing pending."""
        forgotten = 0
        for queue in self._redis.zrangebyscore(keys.ROUTES_USED, "-inf", cutoff_ms):
            forgotten += int(self._scripts.route_forget(
                keys=[keys.ROUTES, keys.ROUTES_USED, keys.route_pending(str(queue))],
                args=[str(queue), cutoff_ms]))
        return forgotten
