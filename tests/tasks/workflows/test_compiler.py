"""The compiler, pure: DAG shapes in, series-parallel plans and canvas trees out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from celery import Celery
from celery.canvas import Signature
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.workflows.compiler import (
    InvalidDag,
    Parallel,
    Series,
    Step,
    implied_order,
    plan,
    to_canvas,
    to_segmented_canvas,
)

app = Celery("compiler-tests", set_as_current=False)


def step(i: int) -> Signature:
    return app.signature("step", kwargs={"i": i}, immutable=True)


def barrier() -> Signature:
    return app.signature("join", immutable=True)


def closure(depends_on: Sequence[Sequence[int]]) -> set[tuple[int, int]]:
    """Every (ancestor, descendant) pair of the DAG."""
    ancestors: list[set[int]] = []
    for deps in depends_on:
        ancestors.append(set(deps).union(*(ancestors[d] for d in deps)))
    return {(a, i) for i, anc in enumerate(ancestors) for a in anc}


def critical_path(depends_on: Sequence[Sequence[int]]) -> int:
    length: list[int] = []
    for deps in depends_on:
        length.append(1 + max((length[d] for d in deps), default=0))
    return max(length)


def makespan(node: Any) -> int:
    """Finish time of a tree with unit-time steps and enough workers."""
    if isinstance(node, Step):
        return 1
    spans = [makespan(part) for part in node.parts]
    return sum(spans) if isinstance(node, Series) else max(spans)


def shape(sig: Any) -> Any:
    """A canvas as nested tuples: ('chain', ...), ('group', ...), ('chord', header, body)."""
    sig = dict(sig)
    kind = sig.get("subtask_type")
    if kind == "chain":
        return ("chain", *[shape(t) for t in sig["kwargs"]["tasks"]])
    if kind == "group":
        return ("group", *[shape(t) for t in sig["kwargs"]["tasks"]])
    if kind == "chord":
        header = ("group", *[shape(t) for t in sig["kwargs"]["header"]])
        return ("chord", header, shape(sig["kwargs"]["body"]))
    return sig["kwargs"].get("i", "join")


def canvas_shape(depends_on: list[list[int]]) -> Any:
    return shape(to_canvas(plan(depends_on).tree, step, barrier))


@pytest.mark.parametrize(("name", "depends_on", "expected"), [
    ("single", [[]], 0),
    ("chain", [[], [0], [1]], ("chain", 0, 1, 2)),
    ("fan-out", [[], [0], [0]], ("chain", 0, ("group", 1, 2))),
    ("fan-in", [[], [], [0, 1]], ("chord", ("group", 0, 1), 2)),
    ("diamond", [[], [0], [0], [1, 2]], ("chain", 0, ("chord", ("group", 1, 2), 3))),
    ("chain after a join", [[], [], [0, 1], [2]],
     ("chord", ("group", 0, 1), ("chain", 2, 3))),
    ("two groups in a row", [[], [], [0, 1], [0, 1]],
     ("chord", ("group", 0, 1), ("chain", "join", ("group", 2, 3)))),
    ("branches of chains", [[], [0], [], [2], [1, 3]],
     ("chord", ("group", ("chain", 0, 1), ("chain", 2, 3)), 4)),
    ("a header branch ending in a group", [[], [0], [0], [], [1, 2, 3]],
     ("chord", ("group", ("chain", 0, ("chord", ("group", 1, 2), "join")), 3), 4)),
    ("a header branch starting with a join", [[], [], [0, 1], [], [2, 3]],
     ("chord", ("group", ("chord", ("group", 0, 1), 2), 3), 4)),
])
def test_series_parallel_shapes_compile_to_exactly_their_canvas(
        name: str, depends_on: list[list[int]], expected: Any) -> None:
    assert canvas_shape(depends_on) == expected
    assert plan(depends_on).forced_cuts == 0


def test_an_n_shape_gets_one_forced_cut_that_orders_one_extra_pair() -> None:
    # A→C, B→C, B→D: A and D are unordered, which no canvas can express
    result = plan([[], [], [0, 1], [1]])
    assert (result.forced_cuts, result.added_orders) == (1, 1)
    assert result.tree == Series((Parallel((Step(0), Step(1))), Parallel((Step(2), Step(3)))))
    assert implied_order(result.tree) - closure([[], [], [0, 1], [1]]) == {(0, 3)}


def test_transitive_edges_add_no_synchronisation() -> None:
    assert canvas_shape([[], [0], [0, 1]]) == ("chain", 0, 1, 2)


@pytest.mark.parametrize("depends_on", [[], [[0]], [[], [1]], [[], [-1]]])
def test_a_dependency_on_a_later_step_is_refused(depends_on: list[list[int]]) -> None:
    with pytest.raises(InvalidDag):
        plan(depends_on)


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 30) -> list[list[int]]:
    """Any DAG: each step depends on any subset of the earlier ones."""
    n = draw(st.integers(1, max_steps))
    return [sorted(draw(st.sets(st.integers(0, i - 1), max_size=4))) if i else []
            for i in range(n)]


@st.composite
def series_parallel_dags(draw: st.DrawFn, max_leaves: int = 24) -> list[list[int]]:
    """A DAG built from series and parallel composition only."""
    expression = draw(st.recursive(
        st.just("step"),
        lambda inner: st.tuples(st.sampled_from(["series", "parallel"]),
                                st.lists(inner, min_size=2, max_size=3)),
        max_leaves=max_leaves))
    depends_on: list[list[int]] = []

    def build(expr: Any, after: list[int]) -> list[int]:
        """Add the steps of `expr` after the steps `after`; return its sinks."""
        if expr == "step":
            depends_on.append(sorted(after))
            return [len(depends_on) - 1]
        kind, parts = expr
        if kind == "series":
            for part in parts:
                after = build(part, after)
            return after
        return [sink for part in parts for sink in build(part, after)]

    build(expression, [])
    return depends_on


@settings(max_examples=300, deadline=None)
@given(dags())
def test_any_dag_is_planned_with_all_its_orders_and_its_critical_path(
        depends_on: list[list[int]]) -> None:
    result = plan(depends_on)
    implied = implied_order(result.tree)
    required = closure(depends_on)
    assert required <= implied
    assert len(implied - required) == result.added_orders
    assert makespan(result.tree) == critical_path(depends_on)
    assert sorted(_steps(result.tree)) == list(range(len(depends_on)))


@settings(max_examples=300, deadline=None)
@given(series_parallel_dags())
def test_series_parallel_dags_are_planned_exactly(depends_on: list[list[int]]) -> None:
    result = plan(depends_on)
    assert (result.forced_cuts, result.added_orders) == (0, 0)
    assert implied_order(result.tree) == closure(depends_on)


@settings(max_examples=100, deadline=None)
@given(dags(max_steps=20))
def test_every_step_appears_once_in_the_canvas(depends_on: list[list[int]]) -> None:
    flat = _canvas_steps(canvas_shape(depends_on))
    assert sorted(flat) == list(range(len(depends_on)))


def _steps(node: Any) -> list[int]:
    if isinstance(node, Step):
        return [node.index]
    return [i for part in node.parts for i in _steps(part)]


def _canvas_steps(shaped: Any) -> list[int]:
    if isinstance(shaped, int):
        return [shaped]
    if shaped == "join":
        return []
    return [i for part in shaped[1:] for i in _canvas_steps(part)]


def steps_in(shape_: Any) -> list[int]:
    """The step indices of a canvas shape, in the order they appear."""
    if isinstance(shape_, int):
        return [shape_]
    if isinstance(shape_, tuple):
        return [i for part in shape_[1:] for i in steps_in(part)]
    return []


def segmented(depends_on: list[list[int]], segment: int) -> tuple[Any, dict[int, Any]]:
    canvas = to_segmented_canvas(plan(depends_on).tree, depends_on, step, barrier, segment)
    return shape(canvas.head), {i: shape(sig) for i, sig in canvas.parked.items()}


@pytest.mark.parametrize("length", [10, 100, 1000])
def test_a_long_chain_is_cut_into_segments_that_each_carry_a_bounded_rest(length: int) -> None:
    depends_on = [[i - 1] if i else [] for i in range(length)]
    head, parked = segmented(depends_on, 16)
    pieces = [head, *(parked[i] for i in sorted(parked))]
    # Every step once, in order, and no message carries more than a segment
    assert [i for piece in pieces for i in steps_in(piece)] == list(range(length))
    assert max(len(steps_in(piece)) for piece in pieces) <= 16
    assert len(parked) == (length - 1) // 16
    # A parked segment starts at a step that depends on the one the chain before it ends with
    for start in parked:
        assert depends_on[start] == [start - 1]


def test_a_chain_is_never_cut_inside_a_chord_header() -> None:
    # Two long branches joined at the end: both are chord header members
    branch = 20
    depends_on = [[]] + [[i - 1] if i > 1 else [] for i in range(1, branch)]
    depends_on += [[]] + [[branch + i - 1] for i in range(1, branch)]
    depends_on += [[branch - 1, 2 * branch - 1]]
    _head, parked = segmented(depends_on, 4)
    assert parked == {}


@settings(max_examples=200, deadline=None)
@given(dags(max_steps=60), st.integers(1, 8))
def test_segmenting_keeps_every_step_exactly_once(depends_on: list[list[int]],
                                                  segment: int) -> None:
    head, parked = segmented(depends_on, segment)
    emitted = steps_in(head) + [i for piece in parked.values() for i in steps_in(piece)]
    assert sorted(emitted) == list(range(len(depends_on)))
    unsegmented = steps_in(shape(to_canvas(plan(depends_on).tree, step, barrier)))
    assert sorted(unsegmented) == sorted(emitted)
    # A parked segment waits for a dependency, which releases it
    assert all(depends_on[start] for start in parked)
