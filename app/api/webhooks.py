"""/api/webhooks: the tenant's webhook signing secret (tasks/webhooks.py)."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint
from app.auth import current_tenant
from tasks.services import current_services

bp = api_blueprint("webhooks", __name__)


@bp.post("/secret")
def rotate_secret() -> tuple[dict[str, Any], int]:
    """A new signing secret, shown this once; the one it replaces still signs (beside it)
    for CHORDLINE_WEBHOOK_SECRET_GRACE seconds, so receivers can switch without a gap."""
    secret = current_services().webhooks.rotate_secret(current_tenant())
    return {"success": True, "secret": secret}, 201
