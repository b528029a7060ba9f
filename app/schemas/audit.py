"""What the audit log may be asked: a page size and where to continue."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas.events import event_id


class AuditQuery(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    before = fields.String(validate=event_id("before must be an entry id"))


AUDIT_QUERY = AuditQuery()
