"""What a WebSocket client may send (subscribe and unsubscribe), and what the server
answers it besides events."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas.events import SINCE_ERROR, event_id
from app.schemas.jobs import ID


class SocketMessageSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["subscribe", "unsubscribe"]))
    job_id = fields.String(validate=ID)
    workflow_id = fields.String(validate=ID)
    # Everything (operators only).
    all = fields.Boolean(load_default=False)
    since = fields.String(validate=event_id(SINCE_ERROR))

    @validates_schema
    def _one_subject(self, data: dict[str, Any], **_: Any) -> None:
        named = [k for k in ("job_id", "workflow_id", "all") if data.get(k)]
        if len(named) != 1:
            raise ValidationError("name exactly one of job_id, workflow_id or all: true")


SOCKET_MESSAGE = SocketMessageSchema()


class SocketAckSchema(Schema):
    """The server's answer to a subscribe (with `since` as asked) or an unsubscribe."""

    type = fields.String(required=True, validate=validate.OneOf(["subscribed", "unsubscribed"]))
    job_id = fields.String()
    workflow_id = fields.String()
    all = fields.Boolean()
    since = fields.String(allow_none=True)


class SocketErrorSchema(Schema):
    """A refused message; the socket stays open."""

    type = fields.String(required=True, validate=validate.Equal("error"))
    code = fields.String(required=True, validate=validate.OneOf([
        "INVALID_JSON", "INVALID_MESSAGE", "JOB_NOT_FOUND", "WORKFLOW_NOT_FOUND", "FORBIDDEN",
        "TOO_MANY_SUBSCRIPTIONS", "QUOTA_EXCEEDED", "EVENTS_UNAVAILABLE"]))
    message = fields.String(required=True)
