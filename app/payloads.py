"""JSON in and out of the API: Flask's provider, with one limit on what a body may be.

Python's parser recurses per nesting level: `[[[[...]]]]` a hundred thousand deep
raises RecursionError, which no handler expects (a 500, or a dead socket reader).
Here it is malformed JSON like any other, so every caller's existing `ValueError`
path answers it (400 `INVALID_JSON`).
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


class NestingTooDeep(ValueError):
    """A JSON text nested past what the parser can follow."""


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """`json.loads`, with a body nested too deeply as a ValueError."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise NestingTooDeep("JSON nested too deeply") from None


class ApiJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)
