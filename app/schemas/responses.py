"""What the job, workflow, event and webhook routes answer, as schemas for the OpenAPI
document (app/openapi/).

The views build plain dicts (or dump JOB, WORKFLOW and STEP_STATUS): these describe
those dicts, field for field, so that the schemathesis test can hold every answer to its
description. A key a view always writes is `required`; one it may write as null is
`allow_none`. The operators' routes (fleet, overview, audit, health) are in
app/schemas/fleet.py.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from app.schemas.jobs import JobSchema
from app.schemas.workflows import StepStatusSchema, WorkflowSchema
from tasks.core.events import EventType
from tasks.core.statuses import JobStatus, WorkflowStatus

ISO = {"format": "date-time"}


def flag(value: bool) -> fields.Boolean:
    """`success`: true on every answer that worked, false on every error."""
    return fields.Boolean(required=True, validate=validate.Equal(value))


def always(field: type[fields.Field], **kwargs: Any) -> fields.Field:
    """A key the view always writes, null when it has no value."""
    return field(required=True, allow_none=True, **kwargs)


def counts(name: str, statuses: list[str], **extra: fields.Field) -> type[Schema]:
    """A count per status (and `total`), as the stats routes answer."""
    members: dict[str, fields.Field] = {s: fields.Integer(required=True) for s in statuses}
    return Schema.from_dict({"total": fields.Integer(required=True), **members, **extra},
                            name=name)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={
        "description": "A stable code; each response lists the ones it can carry"})
    message = fields.String(required=True, metadata={"description": "For people; may change"})
    details = fields.Dict(metadata={"description": "Which fields failed, and why"})


class ErrorSchema(Schema):
    """The one error envelope (app/errors.py)."""

    success = flag(False)
    error = fields.Nested(ErrorBodySchema, required=True)


class MessageSchema(Schema):
    success = flag(True)
    message = fields.String(required=True)


class JobSubmittedSchema(Schema):
    success = flag(True)
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata={
        "description": "`submitted`; with `Prefer: wait`, the job's status when answered"})
    job = fields.Nested(JobSchema, metadata={"description": "Only with `Prefer: wait`"})


class JobStatusSchema(Schema):
    success = flag(True)
    job = fields.Nested(JobSchema, required=True)


class JobPageSchema(Schema):
    success = flag(True)
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    next_cursor = always(fields.String, metadata={"description": "Pass as `cursor` for more"})


JobCountsSchema = counts("JobCounts", [str(s) for s in JobStatus], by_type=fields.Dict(
    keys=fields.String(), values=fields.Integer(), required=True))
WorkflowCountsSchema = counts("WorkflowCounts", [str(s) for s in WorkflowStatus])


class JobStatsSchema(Schema):
    success = flag(True)
    stats = fields.Nested(JobCountsSchema, required=True)
    timeframe = fields.String(required=True, validate=validate.OneOf(["hour", "day", "week"]))


class WorkflowStatsSchema(Schema):
    success = flag(True)
    stats = fields.Nested(WorkflowCountsSchema, required=True)
    timeframe = fields.String(required=True, validate=validate.OneOf(["hour", "day", "week"]))


class EventSchema(Schema):
    """One event (tasks/core/events.py): the same in the history, on /ws and in webhooks."""

    id = fields.String(required=True, metadata={
        "description": "The global log's stream id: orders events, and resumes (`since`)"})
    type = fields.String(required=True, validate=validate.OneOf([str(t) for t in EventType]))
    ts = fields.String(required=True, metadata=ISO)
    tenant = always(fields.String)
    job_id = always(fields.String)
    workflow_id = always(fields.String)
    step_index = always(fields.Integer)
    correlation_id = always(fields.String)
    worker = always(fields.String)
    data = always(fields.Dict)


class EventPageSchema(Schema):
    success = flag(True)
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_since = always(fields.String, metadata={
        "description": "Set when the page is full: pass as `since` for the next"})


class AttemptSchema(Schema):
    n = fields.Integer(required=True)
    at = always(fields.String, metadata=ISO)
    status_code = always(fields.Integer, metadata={"description": "The receiver's answer"})
    error = always(fields.String)
    duration_ms = always(fields.Integer)


class DeliverySchema(Schema):
    """One webhook delivery of one event (tasks/webhooks/store.py)."""

    id = fields.String(required=True, metadata={"description": "`msg_...`, the webhook-id"})
    event_id = fields.String(required=True)
    type = fields.String(required=True, metadata={"description": "The event's type"})
    url = fields.String(required=True)
    status = fields.String(required=True,
                           validate=validate.OneOf(["pending", "delivered", "failed"]))
    attempts = fields.List(fields.Nested(AttemptSchema), required=True)
    next_attempt_at = always(fields.String, metadata=ISO)
    created_at = always(fields.String, metadata=ISO)


class DeliveryListSchema(Schema):
    success = flag(True)
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)


class WebhookSecretSchema(Schema):
    success = flag(True)
    secret = fields.String(required=True, validate=validate.Regexp("^whsec_"), metadata={
        "description": "Verify signatures with it (GET it again at any time)"})


class ArtifactSchema(Schema):
    id = fields.String(required=True)
    url = fields.String(required=True, metadata={"description": "Where to GET it; an image_url"})
    content_type = fields.String(required=True)
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)


class ArtifactCreatedSchema(Schema):
    success = flag(True)
    artifact = fields.Nested(ArtifactSchema, required=True)


class WorkflowCreatedSchema(Schema):
    success = flag(True)
    workflow_id = fields.String(required=True)
    job_ids = fields.List(fields.String(), required=True, metadata={
        "description": "One per step, in the steps' order"})


class WorkflowStatusSchema(Schema):
    success = flag(True)
    workflow = fields.Nested(WorkflowSchema, required=True)
    steps = fields.List(fields.Nested(StepStatusSchema), required=True)


class WorkflowPageSchema(Schema):
    success = flag(True)
    workflows = fields.List(fields.Nested(WorkflowSchema), required=True)
    next_cursor = always(fields.String, metadata={"description": "Pass as `cursor` for more"})


class WorkflowCancelledSchema(Schema):
    success = flag(True)
    status = fields.String(required=True,
                           validate=validate.OneOf([str(s) for s in WorkflowStatus]))
    message = fields.String(required=True)
    cancelled_jobs = fields.Integer(required=True)
    terminated_jobs = fields.Integer(required=True)


class CompensationStartedSchema(Schema):
    success = flag(True)
    status = fields.String(required=True,
                           validate=validate.OneOf([str(s) for s in WorkflowStatus]))
    message = fields.String(required=True)


class TicketSchema(Schema):
    success = flag(True)
    ticket = fields.String(required=True, metadata={"description": "For `/ws?ticket=`, once"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds"})
