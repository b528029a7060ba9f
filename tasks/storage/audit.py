"""The audit log: every operator action (who, what, when, outcome), kept in Redis.

One stream, capped at `CHORDLINE_AUDIT_MAX_ENTRIES` (oldest dropped first), written
after each change an operator or a viewer asks for, whether it was done or
refused; the console's Audit page and `GET /api/audit` read it newest first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis

from tasks.core import keys

AUDIT_LOG = keys.AUDIT_LOG


class AuditLog:
    def __init__(self, client: redis.Redis, max_entries: int) -> None:
        self._redis = client
        self._max = max_entries

    def record(self, entry: Mapping[str, Any]) -> str:
        return cast(str, self._redis.xadd(AUDIT_LOG, {"entry": json.dumps(entry)},
                                          maxlen=self._max, approximate=True))

    def newest(self, limit: int = 100, before: str = "+") -> list[dict[str, Any]]:
        """Up to `limit` entries, newest first, older than the id `before` (exclusive)."""
        upper = f"({before}" if before != "+" else "+"
        rows = cast(list[tuple[str, dict[str, str]]],
                    self._redis.xrevrange(AUDIT_LOG, upper, "-", count=limit))
        return [{"id": entry_id, **json.loads(fields["entry"])} for entry_id, fields in rows]
