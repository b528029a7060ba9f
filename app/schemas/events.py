"""Event history query: `since` (an event id, exclusive) and `limit`; and the one check
of an event id that every query and socket message shares."""

from __future__ import annotations

from collections.abc import Callable

from marshmallow import Schema, ValidationError, fields, validate

from tasks.core.events import MAX_PAGE, is_event_id

SINCE_ERROR = "since must be an event id such as 1700000000000-0, or 0"


def event_id(error: str) -> Callable[[str], None]:
    """A validator: a stream id Redis would accept (parts within 64 bits), else `error`."""
    def check(value: str) -> None:
        if not is_event_id(value):
            raise ValidationError(error)

    return check


class EventQuerySchema(Schema):
    since = fields.String(load_default="0", validate=event_id(SINCE_ERROR))
    limit = fields.Integer(load_default=1000, validate=validate.Range(1, MAX_PAGE))


EVENT_QUERY = EventQuerySchema()
