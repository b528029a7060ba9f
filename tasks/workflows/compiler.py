"""The workflow compiler: a DAG of steps in, Celery canvas out. Pure: no I/O.

Canvas can express exactly the *series-parallel* orders: `chain` puts parts in
sequence, `group` runs them side by side, and a chord joins a group before what
follows. `plan` decomposes the DAG's order into that shape; `to_canvas` emits it.

Decomposition (on the transitive order, with Python ints as bitsets):

* a set of steps whose comparability graph is disconnected is a `Parallel` of
  its connected components;
* a connected set is a `Series` where its steps split into consecutive parts,
  every step of a part before every step of the next. Such a part is a prefix of
  every topological order, so one pass over the step indices (a topological
  order, since steps depend only on earlier steps) finds all the cuts;
* a connected set with no cut contains an N (A→C, B→C, B→D, A and D unordered),
  which no canvas expresses exactly. There we add a *forced cut*: split the set
  between two longest-path levels of the DAG (each step's as-soon-as-possible
  start, counted in steps), choosing the level whose cut orders the fewest pairs
  of steps that the DAG left unordered, and decompose each side again. Cutting
  only between these levels keeps the critical path: with unit-time steps the
  plan finishes as early as the DAG allows. Finding the fewest added orders
  overall is a harder problem; this choice is greedy, and `Plan` reports what it
  cost (`forced_cuts`, `added_orders`).

Emission avoids the canvas forms that misbehave on Celery's Redis backend:
groups are never chained to groups (Celery 5.7 runs the second group twice), a
group followed by a step becomes an explicit `chord` with that step as its body,
and a group followed by another group is joined by a `chordline.join` barrier
task. Inside a chord header, a series never ends in a bare group, so every
header member reports to the chord exactly once.

Long chains: Celery sends the rest of a chain inside every message of it, so a
chain of n steps costs O(n^2) bytes (about 4 MB for 200 steps).
`to_segmented_canvas` cuts the workflow's outer chain every `SEGMENT` steps,
where a step depends on the step before it: the head segment is applied, and each
later segment's canvas is parked on its first step's job, which the job store
releases and publishes when that step's dependencies complete, as it does for a
step delivered early. Bytes then grow linearly (at most `SEGMENT` signatures a
message), for one extra store read per cut; the order is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from celery import chord, group
from celery.canvas import Signature, _chain

from tasks.core.errors import InvalidInput


class InvalidDag(InvalidInput):
    """A dependency that is not on an earlier step."""

    default_code = "INVALID_DAG"


@dataclass(frozen=True)
class Step:
    index: int


@dataclass(frozen=True)
class Series:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Parallel:
    parts: tuple[Node, ...]


Node = Step | Series | Parallel


@dataclass(frozen=True)
class Plan:
    """A canvas-shaped order for the steps, and what it added to the DAG's order."""

    tree: Node
    forced_cuts: int
    added_orders: int


def plan(depends_on: Sequence[Sequence[int]]) -> Plan:
    """Decompose a DAG (step i depends on the indices in `depends_on[i]`, all < i)."""
    if not depends_on:
        raise InvalidDag("a workflow needs at least one step")
    order = _Order(depends_on)
    tree = order.decompose(order.all)
    return Plan(tree, order.forced_cuts, order.added_orders)


class _Order:
    """The DAG's transitive order as bitsets, and the decomposition over it."""

    def __init__(self, depends_on: Sequence[Sequence[int]]) -> None:
        n = len(depends_on)
        self.deps = [sorted(set(d)) for d in depends_on]
        for i, deps in enumerate(self.deps):
            if any(not 0 <= d < i for d in deps):
                raise InvalidDag(f"step {i} may depend only on earlier steps")
        self.children: list[list[int]] = [[] for _ in range(n)]
        for i, deps in enumerate(self.deps):
            for d in deps:
                self.children[d].append(i)
        self.anc = [0] * n
        for i in range(n):
            for d in self.deps[i]:
                self.anc[i] |= self.anc[d] | (1 << d)
        self.desc = [0] * n
        for i in reversed(range(n)):
            for c in self.children[i]:
                self.desc[i] |= self.desc[c] | (1 << c)
        level = [0] * n
        for i in range(n):
            level[i] = max((level[d] + 1 for d in self.deps[i]), default=0)
        self.level_masks = [0] * (max(level) + 1)
        for i, k in enumerate(level):
            self.level_masks[k] |= 1 << i
        self.all = (1 << n) - 1
        self.forced_cuts = 0
        self.added_orders = 0

    def decompose(self, members: int) -> Node:
        if members & (members - 1) == 0:
            return Step(members.bit_length() - 1)
        components = list(self._components(members))
        if len(components) > 1:
            return Parallel(tuple(self._series(c) for c in components))
        return self._series(members)

    def _series(self, members: int) -> Node:
        if members & (members - 1) == 0:
            return Step(members.bit_length() - 1)
        parts = self._cuts(members)
        if len(parts) == 1:
            parts = self._forced_cut(members)
        nodes: list[Node] = []
        for part in parts:
            node = self.decompose(part)
            nodes.extend(node.parts if isinstance(node, Series) else (node,))
        return Series(tuple(nodes))

    def _components(self, members: int) -> Iterator[int]:
        """Connected components of the comparability graph on `members`."""
        remaining = members
        while remaining:
            component = frontier = remaining & -remaining
            while frontier:
                reach = 0
                for i in _bits(frontier):
                    reach |= self.anc[i] | self.desc[i]
                frontier = reach & remaining & ~component
                component |= frontier
            remaining &= ~component
            yield component

    def _cuts(self, members: int) -> list[int]:
        """Split into the most parts such that each part precedes the next entirely."""
        parts, part, below_all, prefix = [], 0, -1, 0
        indices = list(_bits(members))
        for i in indices[:-1]:
            part |= 1 << i
            prefix |= 1 << i
            below_all &= self.desc[i]
            if members & ~prefix & ~below_all == 0:
                parts.append(part)
                part = 0
        parts.append(part | (1 << indices[-1]))
        return parts

    def _forced_cut(self, members: int) -> list[int]:
        """Cut a set with an N in it at the level that adds the fewest orders."""
        best: tuple[int, int] | None = None
        for added, lower in self._level_cuts(members, self._levels(members)):
            if best is None or added < best[0]:
                best = (added, lower)
        assert best is not None, "a connected set of two or more steps has a level cut"
        added, lower = best
        self.forced_cuts += 1
        self.added_orders += added
        return [lower, members & ~lower]

    def _levels(self, members: int) -> list[list[int]]:
        """The members grouped by their (global) as-soon-as-possible level.

        Cutting only at these levels keeps an as-soon-as-possible schedule of the
        whole DAG valid for the plan, so unit-time steps finish in the DAG's
        critical path however many forced cuts are made.
        """
        levels = []
        for mask in self.level_masks:
            if mask & members:
                levels.append(list(_bits(mask & members)))
        return levels

    def _level_cuts(self, members: int, levels: list[list[int]]) -> Iterator[tuple[int, int]]:
        """(orders added, lower part) for each cut between consecutive levels.

        Incremental: moving a level from the upper part to the lower one changes
        the count of already-ordered cross pairs by that level's links to each side.
        """
        lower, upper = 0, members
        size_lower, size_upper = 0, members.bit_count()
        ordered_across = 0
        for level in levels[:-1]:
            for i in level:
                upper &= ~(1 << i)
                ordered_across -= (self.anc[i] & lower).bit_count()
                ordered_across += (self.desc[i] & upper).bit_count()
            for i in level:
                lower |= 1 << i
            size_lower += len(level)
            size_upper -= len(level)
            yield size_lower * size_upper - ordered_across, lower


def _bits(mask: int) -> Iterator[int]:
    """The indices of the set bits, ascending."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def implied_order(tree: Node) -> set[tuple[int, int]]:
    """Every (before, after) pair of steps that the tree orders (for checks and tests)."""
    pairs: set[tuple[int, int]] = set()
    _collect(tree, pairs)
    return pairs


def _collect(node: Node, pairs: set[tuple[int, int]]) -> list[int]:
    if isinstance(node, Step):
        return [node.index]
    groups = [_collect(part, pairs) for part in node.parts]
    if isinstance(node, Series):
        for k, earlier in enumerate(groups):
            for later in groups[k + 1:]:
                pairs.update((a, b) for a in earlier for b in later)
    return [i for g in groups for i in g]


# Most signatures one message of a workflow's outer chain carries (see the module doc).
SEGMENT = 16


@dataclass(frozen=True)
class Segmented:
    """A canvas with its long chains cut: `head` is applied; `parked[i]` runs the rest of
    a chain from step i, sent once step i's dependencies complete."""

    head: Signature
    parked: dict[int, Signature] = field(default_factory=dict)


def to_canvas(tree: Node, step: Callable[[int], Signature],
              barrier: Callable[[], Signature]) -> Signature:
    """The canvas that runs `tree`: `step(i)` runs step i, `barrier()` joins two groups."""
    return _Emitter(step, barrier).emit(tree, in_header=False)


def to_segmented_canvas(tree: Node, depends_on: Sequence[Sequence[int]],
                        step: Callable[[int], Signature], barrier: Callable[[], Signature],
                        segment: int = SEGMENT) -> Segmented:
    """`to_canvas`, with the outer chain cut before a step that depends on the step
    before it, once `segment` signatures follow in the message."""
    emitter = _Emitter(step, barrier, depends_on, segment)
    head = emitter.emit(tree, in_header=False)
    return Segmented(head, emitter.parked)


class _Emitter:
    def __init__(self, step: Callable[[int], Signature], barrier: Callable[[], Signature],
                 depends_on: Sequence[Sequence[int]] | None = None, segment: int = 0) -> None:
        self._step = step
        self._barrier = barrier
        self._depends_on = depends_on
        self._segment = segment
        self.parked: dict[int, Signature] = {}

    def emit(self, node: Node, *, in_header: bool) -> Signature:
        if isinstance(node, Step):
            return self._step(node.index)
        if isinstance(node, Parallel):
            return self._group(node)
        elements = self._series(node, in_header=in_header)
        return elements[0] if len(elements) == 1 else _flat_chain(elements)

    def _group(self, node: Parallel) -> Signature:
        return group([self.emit(part, in_header=True) for part in node.parts])

    def _series(self, node: Series, *, in_header: bool) -> list[Signature]:
        """The chain for a series, built back to front so each chord's body is the rest.

        Chords come last in every chain they are part of: Celery's chain
        constructor then has nothing to re-nest or deep-copy, and at apply time
        it unrolls the task-led bodies into one flat chain.
        """
        rest: list[Signature] = []  # the continuation, back to front
        led_by_step = False
        carried = 0  # signatures in the continuation (a message of it carries them all)
        for k in reversed(range(len(node.parts))):
            part = node.parts[k]
            if isinstance(part, Step):
                rest.append(self._step(part.index))
                led_by_step, carried = True, carried + 1
                if not in_header and carried >= self._segment and self._cuts(node, k):
                    self.parked[part.index] = _as_chain(rest)
                    rest, carried = [], 0
                continue
            if not in_header:
                carried += _size(part) + 1
            assert isinstance(part, Parallel), "a series holds steps and parallels only"
            if not rest and not in_header:
                rest = [self._group(part)]
            else:
                if not led_by_step:
                    rest.append(self._barrier())
                rest = [chord(self._group(part), _as_chain(rest))]
            led_by_step = False
        return rest[::-1]


    def _cuts(self, node: Series, k: int) -> bool:
        """Can the chain be cut before part k: a step that depends on the step before it,
        so the job store releases it exactly when the chain would have run it?"""
        if self._depends_on is None or k == 0 or not self._segment:
            return False
        part, before = node.parts[k], node.parts[k - 1]
        return (isinstance(part, Step) and isinstance(before, Step)
                and before.index in self._depends_on[part.index])


def _as_chain(rest: list[Signature]) -> Signature:
    """A continuation built back to front, as one signature."""
    return rest[0] if len(rest) == 1 else _flat_chain(rest[::-1])


def _size(node: Node) -> int:
    """How many steps a node holds."""
    if isinstance(node, Step):
        return 1
    return sum(_size(part) for part in node.parts)


def _flat_chain(elements: list[Signature]) -> Signature:
    """A chain of steps that may end in a chord or group, built without Celery's fold.

    `chain(*elements)` would give the same structure (it only re-nests chords
    that are followed by something, and ours never are) but deep-copies every
    element on the way, which costs more than the whole plan for 1,000 steps.
    """
    return _chain(elements)
