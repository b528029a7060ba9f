"""/api/machines (the seed's machine routes, for operators): the fleet, its registration,
drain and resume."""

from __future__ import annotations

from typing import Any

from app.api import api_blueprint, json_body
from app.errors import ApiError
from app.schemas.machines import MACHINE_REGISTER
from tasks.core.names import MACHINE_ID
from tasks.services import current_services

bp = api_blueprint("machines", __name__, operators_only=True)


@bp.get("")
def list_machines() -> dict[str, Any]:
    """Every machine registered or seen: online, draining or offline."""
    return {"success": True, "machines": current_services().machines.describe_all()}


@bp.get("/<machine_id>")
def get_machine(machine_id: str) -> dict[str, Any]:
    return {"success": True, "machine": _describe(machine_id)}


@bp.post("")
def register() -> tuple[dict[str, Any], int]:
    """Register a machine's labels before it comes online (or change them)."""
    body = json_body(MACHINE_REGISTER, "MACHINE_REGISTRATION_FAILED", "Machine")
    created = current_services().machine_service.register(body["id"], body["labels"])
    return {"success": True, "machine": _describe(body["id"])}, 201 if created else 200


@bp.post("/<machine_id>/drain")
def drain(machine_id: str) -> dict[str, Any]:
    """No new job starts on the machine; its running jobs finish."""
    return _drain(machine_id, True)


@bp.post("/<machine_id>/resume")
def resume(machine_id: str) -> dict[str, Any]:
    return _drain(machine_id, False)


def _drain(machine_id: str, drain: bool) -> dict[str, Any]:
    if not MACHINE_ID.match(machine_id) or not current_services().machine_service.drain(
            machine_id, drain):
        raise _not_found(machine_id)
    return {"success": True, "machine": _describe(machine_id)}


def _describe(machine_id: str) -> dict[str, Any]:
    machine = current_services().machines.describe(machine_id) if MACHINE_ID.match(
        machine_id) else None
    if machine is None:
        raise _not_found(machine_id)
    return machine


def _not_found(machine_id: str) -> ApiError:
    return ApiError(404, "MACHINE_NOT_FOUND", f"Machine with ID {machine_id} not found")
