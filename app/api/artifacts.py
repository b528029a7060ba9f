"""/api/artifacts: upload input images, download results (their tenant only)."""

from __future__ import annotations

from typing import Any

from flask import Response, request, send_file

from app.api import api_blueprint
from app.auth import current_tenant
from app.errors import ApiError
from tasks.services import current_services

bp = api_blueprint("artifacts", __name__)


@bp.post("")
def upload() -> tuple[dict[str, Any], int]:
    """Store an image (multipart field `file`, or the raw body) for use as `image_url`."""
    services = current_services()
    request.max_content_length = services.settings.max_upload_bytes
    upload = request.files.get("file")
    data = upload.read() if upload else request.get_data()
    if not data:
        raise ApiError(400, "INVALID_UPLOAD",
                       "Send an image as multipart field 'file' or as the body")
    artifact = services.artifacts.save_upload(data, current_tenant())
    return {"success": True, "artifact": artifact.public()}, 201


@bp.get("/<artifact_id>")
def download(artifact_id: str) -> Response:
    services = current_services()
    artifact = services.artifacts.get(artifact_id, current_tenant())
    path = services.artifacts.path(artifact) if artifact else None
    if artifact is None or path is None or not path.is_file():
        raise ApiError(404, "ARTIFACT_NOT_FOUND", f"Artifact with ID {artifact_id} not found")
    response = send_file(path.resolve(), mimetype=artifact.content_type, max_age=0,
                         download_name=f"{artifact_id}.png", conditional=True)
    # A tenant's image: no shared cache may keep it, and the browser need not either.
    response.headers["Cache-Control"] = "private, no-store"
    return response
