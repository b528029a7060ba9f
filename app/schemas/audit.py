"""What the audit log may be asked: a page size and where to continue."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from tasks.events import EVENT_ID


class AuditQuery(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    before = fields.String(validate=validate.Regexp(EVENT_ID, error="before must be an entry id"))


AUDIT_QUERY = AuditQuery()
