"""Placement: which route queues a GPU slot pulls from, so jobs run where their model is warm.

Jobs wait in their route's Celery queue (tasks/fleet/offers.py); each worker consumes the
queues this module orders for it, and Celery's broker hands a message to the
first idle consumer. Placement is therefore decided by the idle slots, each
looking at the whole fleet, at the moments that matter (after every job it
finishes, and on a timer while idle), never by a scheduler that holds jobs back
from the broker. Pure: the state comes in, an ordered list of queues goes out.

A slot pulls, in this order:

1. *starving* routes: a job pending for longer than `max_wait` goes first on
   every slot that accepts it, warm or not, oldest first;
2. *warm* routes, whose model this slot holds, and *free* routes, with no model
   to load (a CPU-served type, or a GPU job naming none): the oldest job first;
3. *cold* routes, only where loading the model here beats waiting for it:
   - nobody online holds the model: someone must load it. A slot that would
     have to evict a model leaves it to an idle slot that would not;
   - otherwise *model pressure* (SwarmUI's term): the queue would take
     `pending x run time / holders` to drain on the slots that hold the model;
     when that exceeds one load, another slot loads it too. The busiest first.

   A cold route never evicts a model that still has jobs waiting here. Kombu's
   Redis transport reads queues in the order given within each message
   priority, so the ranking of the issue holds: model loaded and idle > idle
   slot with room > model loaded but busy (the job waits for it unless the
   pressure says otherwise) > evicting the least recently used model.

Bound: a pending job that some online worker accepts starts within
`max_wait` of becoming pending plus the time until one of those workers is
next free (its current job and, at most, one model load), unless jobs of a
higher message priority keep arriving or the fleet does not keep up with its
load at all. Without step 1, a slot with two warm models and a steady stream
for the first could starve the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tasks.fleet.offers import Offer, Route


@dataclass(frozen=True)
class Waiting:
    """One route as the slots see it: its queue, its pending jobs and since when the
    oldest has waited (ms)."""

    route: Route
    queue: str
    pending: int = 0
    oldest_ms: int | None = None


@dataclass(frozen=True)
class LoadedModel:
    name: str
    vram_gb: float


@dataclass(frozen=True)
class Slot:
    """One worker of the fleet: what it offers, the models its GPU holds (most
    recently used first, a model being loaded included), and whether it runs a job."""

    hostname: str
    offer: Offer
    models: tuple[LoadedModel, ...] = ()
    busy: bool = False

    def holds(self, model: str) -> bool:
        return any(m.name == model for m in self.models)

    def evictions(self, vram_gb: float) -> list[str]:
        """The models that loading one of `vram_gb` would evict (least recent first)."""
        kept = list(self.models)
        evicted: list[str] = []
        while kept and sum(m.vram_gb for m in kept) + vram_gb > self.offer.gpu_memory_gb + 1e-9:
            evicted.append(kept.pop().name)
        return evicted


@dataclass(frozen=True)
class Estimates:
    """Seconds a route's job runs and a model takes to load, as measured (EWMA), with a
    neutral default (equal times) until a first measurement."""

    run_s: Mapping[str, float] = field(default_factory=dict)
    load_s: Mapping[str, float] = field(default_factory=dict)
    default_s: float = 10.0

    def run(self, queue: str) -> float:
        return self.run_s.get(queue, self.default_s)

    def load(self, model: str) -> float:
        return self.load_s.get(model, self.default_s)


def pull_order(me: Slot, waiting: Sequence[Waiting], fleet: Sequence[Slot],
               estimates: Estimates, now_ms: int, max_wait_s: float) -> list[str]:
    """The route queues `me` consumes, best first (see the module docstring)."""
    if me.offer.draining:
        return []
    eligible = [w for w in waiting if me.offer.accepts(w.route)]
    starving: list[Waiting] = []
    ready: list[Waiting] = []
    cold: list[tuple[tuple[bool, float], str]] = []
    for w in eligible:
        if w.pending and w.oldest_ms is not None and now_ms - w.oldest_ms > max_wait_s * 1000:
            starving.append(w)
        elif _free(me.offer, w.route) or me.holds(w.route.model):
            ready.append(w)
        elif (rank := _cold_rank(me, w, eligible, fleet, estimates)) is not None:
            cold.append((rank, w.queue))
    return _oldest_first(starving) + _oldest_first(ready) + [q for _, q in sorted(cold)]


def _oldest_first(routes: list[Waiting]) -> list[str]:
    return [w.queue for w in sorted(
        routes, key=lambda w: (w.oldest_ms if w.oldest_ms is not None else 2**63, w.queue))]


def _free(offer: Offer, route: Route) -> bool:
    return route.job_type in offer.cpu_types or not route.model


def _cold_rank(me: Slot, w: Waiting, eligible: Sequence[Waiting], fleet: Sequence[Slot],
               estimates: Estimates) -> tuple[bool, float] | None:
    """Where a cold route goes in `me`'s order (lower first), or None to leave it."""
    model = w.route.model
    evicted = me.evictions(w.route.gpu_memory)
    if any(v.pending and v.route.model in evicted for v in eligible):
        return None  # never evict a model that still has jobs waiting here
    others = [s for s in fleet if s.hostname != me.hostname and s.offer.accepts(w.route)]
    holders = [s for s in others if s.holds(model)]
    if not holders:
        if evicted and any(not s.busy and not s.evictions(w.route.gpu_memory) for s in others):
            return None  # an idle slot with room loads it without evicting anything
        if evicted and not w.pending:
            return None
        return (False, -w.pending * estimates.run(w.queue))
    pressure = w.pending * estimates.run(w.queue) / len(holders)
    if pressure <= estimates.load(model):
        return None
    return (True, -pressure)
