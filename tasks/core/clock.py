"""Timestamps in the one format the API promises: ISO 8601 UTC with milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int | None = None) -> str:
    moment = datetime.now(UTC) if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(ts: str) -> int:
    """Milliseconds since the epoch of a timestamp `iso` wrote."""
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
