"""/api/overview (operators and viewers): the console's first page, as JSON."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint
from tasks.core.clock import now_ms
from tasks.services import current_services

bp = api_blueprint("overview", __name__, operators_only=True)


@bp.get("")
def overview() -> dict[str, Any]:
    """Jobs and workflows per status, the last hour, queues by depth, machines by status."""
    return {"success": True, **current_services().overview.summary(now_ms())}
