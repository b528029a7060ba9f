"""Placement: the queues a slot pulls from, warm models first, and never a job that cannot run."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.fleet.offers import Offer, Route
from tasks.fleet.placement import Estimates, LoadedModel, Slot, Waiting, pull_order

NOW = 10_000_000
MODELS = {"a": frozenset(), "b": frozenset(), "c": frozenset()}


def offer(memory: float = 24, machine: str = "m", **kwargs: object) -> Offer:
    return Offer(machine, gpu_types=frozenset({"simulate"}), cpu_types=frozenset({"echo"}),
                 models=MODELS, gpu_memory_gb=memory, **kwargs)  # type: ignore[arg-type]


def slot(name: str, *models: str, memory: float = 24, busy: bool = False,
         vram: float = 10) -> Slot:
    return Slot(name, offer(memory, machine=name), tuple(LoadedModel(m, vram) for m in models),
                busy)


def waiting(model: str, pending: int, vram: int = 10, waited_s: float = 1) -> Waiting:
    route = Route("simulate", vram, model)
    return Waiting(route, route.queue("q"), pending, NOW - int(waited_s * 1000))


def order(me: Slot, routes: list[Waiting], fleet: list[Slot], *, load: float = 3,
          run: float = 1, max_wait: float = 60) -> list[str]:
    estimates = Estimates({w.queue: run for w in routes}, {m: load for m in MODELS})
    return pull_order(me, routes, [me, *fleet], estimates, NOW, max_wait)


def test_warm_and_free_routes_come_first_oldest_job_first() -> None:
    me = slot("g1", "b")
    echo = Waiting(Route("echo", 4), "q.echo", 3, NOW - 5000)
    routes = [waiting("a", 1), waiting("b", 5), echo]
    # a is cold and nobody holds it: g1 has room (10 + 10 <= 24), so it may load it last
    assert order(me, routes, []) == ["q.echo", routes[1].queue, routes[0].queue]


def test_a_model_held_by_a_busy_slot_waits_for_it_unless_pressure_says_otherwise() -> None:
    me = slot("g1", "a")
    busy = slot("g2", "b", busy=True)
    light, heavy = waiting("b", 2), waiting("b", 4)
    # 2 jobs x 1 s on one holder is less than a 3 s load: leave them to g2
    assert order(me, [light], [busy]) == []
    # 4 jobs x 1 s is more than a load: g1 loads b too
    assert order(me, [heavy], [busy]) == [heavy.queue]


def test_nobody_holding_a_model_means_an_idle_slot_with_room_loads_it() -> None:
    me = slot("g1")
    routes = [waiting("a", 2), waiting("c", 6)]
    # the busier route first
    assert order(me, routes, []) == [routes[1].queue, routes[0].queue]


def test_a_slot_that_would_evict_leaves_a_cold_model_to_an_idle_slot_with_room() -> None:
    full = slot("g1", "a", memory=12)  # holds a; loading c would evict it
    roomy = slot("g2", memory=24)
    route = waiting("c", 3)
    assert order(full, [route], [roomy]) == []
    assert order(full, [route], [slot("g2", "a", "b", memory=20, busy=True)]) == [route.queue]


def test_a_model_with_jobs_waiting_here_is_never_evicted_for_a_cold_one() -> None:
    me = slot("g1", "a", memory=12)
    mine, other = waiting("a", 1), waiting("c", 50)
    assert order(me, [mine, other], []) == [mine.queue]


def test_a_starving_route_goes_first_everywhere() -> None:
    me = slot("g1", "a", memory=12)
    mine, starved = waiting("a", 10), waiting("b", 1, waited_s=120)
    assert order(me, [mine, starved], [slot("g2", "b", busy=True)]) == [
        starved.queue, mine.queue]


def test_a_draining_slot_pulls_nothing() -> None:
    me = Slot("g1", offer(draining=True))
    assert order(me, [waiting("a", 3)], []) == []


def test_routes_a_slot_cannot_run_are_never_pulled() -> None:
    me = slot("g1", memory=12)
    too_big, unknown_model = waiting("a", 3, vram=16), waiting("z", 3)
    assert order(me, [too_big, unknown_model], []) == []


@settings(max_examples=200, deadline=None)
@given(memory=st.sampled_from([8, 12, 24, 48]),
       held=st.lists(st.sampled_from(sorted(MODELS)), unique=True, max_size=2),
       routes=st.lists(st.tuples(st.sampled_from([*MODELS, "z"]), st.integers(0, 20),
                                 st.sampled_from([4, 10, 16, 30]), st.floats(0, 200)),
                       max_size=8),
       others=st.lists(st.tuples(st.lists(st.sampled_from(sorted(MODELS)), unique=True,
                                          max_size=2), st.booleans()), max_size=3))
def test_every_pulled_queue_is_one_the_slot_can_run(
        memory: int, held: list[str], routes: list[tuple[str, int, int, float]],
        others: list[tuple[list[str], bool]]) -> None:
    me = slot("me", *held, memory=memory, vram=4)
    fleet = [slot(f"o{i}", *models, busy=busy) for i, (models, busy) in enumerate(others)]
    pending = {waiting(m, n, v, s).queue: waiting(m, n, v, s) for m, n, v, s in routes}
    pulled = order(me, list(pending.values()), fleet)
    assert len(pulled) == len(set(pulled))
    for queue in pulled:
        assert me.offer.accepts(pending[queue].route)
