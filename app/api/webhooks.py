"""/api/webhooks: the tenant's webhook signing secret (tasks/webhooks/store.py)."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint
from app.auth import Role, current_principal, current_tenant
from app.errors import ApiError
from tasks.services import current_services

bp = api_blueprint("webhooks", __name__)


@bp.get("/secret")
def read_secret() -> dict[str, Any]:
    """The tenant's current signing secret, made now if it has none yet. A viewer may
    read everything else, but a secret signs: it is not for a read-only key."""
    if current_principal().role == Role.VIEWER:
        raise ApiError(403, "FORBIDDEN", "A viewer key may not read a signing secret")
    return {"success": True, "secret": current_services().webhooks.secret(current_tenant())}


@bp.post("/secret")
def rotate_secret() -> tuple[dict[str, Any], int]:
    """A new signing secret; the one it replaces still signs (beside it)
    for CHORDLINE_WEBHOOK_SECRET_GRACE seconds, so receivers can switch without a gap."""
    secret = current_services().webhooks.rotate_secret(current_tenant())
    return {"success": True, "secret": secret}, 201
