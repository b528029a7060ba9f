"""Event history query: `since` (an event id, exclusive) and `limit`."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from tasks.events import EVENT_ID, MAX_PAGE


class EventQuerySchema(Schema):
    since = fields.String(load_default="0", validate=validate.Regexp(
        EVENT_ID, error="since must be an event id such as 1700000000000-0, or 0"))
    limit = fields.Integer(load_default=1000, validate=validate.Range(1, MAX_PAGE))


EVENT_QUERY = EventQuerySchema()
