"""`when`: declarative conditions on a dependency's outcome. Data, never code.

A condition names a dependency (`step`), a dotted `path` into what that step
left (`status`, or `result.<field>...`, with list indices as numbers), an
operator and a value. A step runs only if all of its conditions hold; a
condition that cannot be evaluated (a missing field, values that do not
compare) does not hold.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MISSING = object()


def _contains(a: Any, b: Any) -> bool:
    return b in a


def _is_in(a: Any, b: Any) -> bool:
    return a in b


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le, "in": _is_in, "not_in": _not_in,
    "contains": _contains,
}
# Operators that look only at whether the path exists / is truthy.
PRESENCE = ("exists", "truthy", "falsy")


@dataclass(frozen=True)
class Condition:
    step: int
    path: str
    op: str
    value: Any = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Condition:
        return cls(int(raw["step"]), str(raw["path"]), str(raw["op"]), raw.get("value"))

    def holds(self, outcome: Mapping[str, Any]) -> bool:
        """Whether the condition holds for a dependency's `{status, result}`."""
        found = lookup(outcome, self.path)
        if self.op == "exists":
            return (found is not _MISSING) == (self.value is not False)
        if self.op == "truthy":
            return found is not _MISSING and bool(found)
        if self.op == "falsy":
            return found is _MISSING or not found
        if found is _MISSING:
            return False
        try:
            return bool(OPERATORS[self.op](found, self.value))
        except TypeError:
            return False

    def describe(self) -> str:
        value = "" if self.op in PRESENCE else f" {self.value!r}"
        return f"step {self.step} {self.path} {self.op}{value}"


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path, or a sentinel when any part is missing."""
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, Sequence) and not isinstance(current, str) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def first_unmet(conditions: Sequence[Condition],
                outcomes: Mapping[int, Mapping[str, Any]]) -> Condition | None:
    """The first condition that does not hold, or None when the step should run."""
    for condition in conditions:
        if not condition.holds(outcomes.get(condition.step, {})):
            return condition
    return None
