"""JSON in and out of the API: Flask's provider, with one limit on what a body may be.

Python's parser recurses per nesting level: `[[[[...]]]]` a hundred thousand deep
raises RecursionError, which no handler expects (a 500, or a dead socket reader),
and a body just under that limit would fail later, when it is stored. Here any
body nested past MAX_DEPTH is malformed JSON like any other, so every caller's
existing `ValueError` path answers it (400 `INVALID_JSON`).
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider

from tasks.core.errors import InvalidInput


class NestingTooDeep(InvalidInput):
    """A JSON text nested past what the parser can follow."""

    default_code = "INVALID_JSON"


# No request of ours nests deeper; far below the parser's and the encoder's limits,
# so a body that parses is also one that can be stored and echoed.
MAX_DEPTH = 64


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """`json.loads`, with a body nested deeper than MAX_DEPTH as a ValueError."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise NestingTooDeep("JSON nested too deeply") from None
    if _depth(value) > MAX_DEPTH:
        raise NestingTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deep containers nest, measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
    return deepest


class ApiJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)
