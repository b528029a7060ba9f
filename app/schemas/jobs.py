"""Job request and response schemas (the seed's JSON shapes)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from tasks.core import keys
from tasks.core.names import LABEL_KEY, LABEL_VALUE, MODEL_NAME
from tasks.core.statuses import JobStatus
from tasks.webhooks.store import CATEGORIES

ID = validate.Regexp(keys.RECORD_ID, error="must be 1-64 letters, digits, _ or -")


def labels_field(**kwargs: Any) -> fields.Dict:
    """Node labels, as jobs ask for them and operators set them."""
    return fields.Dict(
        keys=fields.String(validate=validate.Regexp(
            LABEL_KEY, error="label names are 1-63 letters, digits, . _ - /")),
        values=fields.String(validate=validate.Regexp(
            LABEL_VALUE, error="label values are up to 63 letters, digits, . _ -")),
        validate=validate.Length(max=16, error="at most 16 labels"), **kwargs)


class RequirementsSchema(Schema):
    """What a job asks of the machine that runs it, beyond what its handler computes."""

    gpu_memory = fields.Integer(strict=True, validate=validate.Range(
        1, 4096, error="GPU memory must be between 1 and 4096 GB"))
    model = fields.String(validate=validate.Regexp(
        MODEL_NAME, error="must be 1-100 letters, digits, . _ - (starting with one of the "
                          "first two)"))
    labels = labels_field()


class JobFields(Schema):
    """What a job and a workflow step have in common."""

    type = fields.String(required=True, validate=validate.Length(min=1, max=100),
                         error_messages={"required": "Job type is required",
                                         "null": "Job type is required"})
    prompt = fields.String(allow_none=True)
    parameters = fields.Dict(keys=fields.String(), load_default=dict)
    retries = fields.Integer(load_default=0, strict=True, validate=validate.Range(0, 10))
    timeout_seconds = fields.Integer(strict=True, validate=validate.Range(min=1))
    requirements = fields.Nested(RequirementsSchema)


class JobSubmitSchema(JobFields):
    priority = fields.Integer(
        load_default=50, strict=True,
        validate=validate.Range(0, 100, error="Priority must be between 0 and 100"))
    webhook_url = fields.URL(schemes={"http", "https"}, require_tld=False,
                             validate=validate.Length(max=2048))
    # Which events go to webhook_url (tasks/webhooks/store.py); default ["completed"].
    webhook_events_filter = fields.List(
        fields.String(validate=validate.OneOf(CATEGORIES)),
        validate=validate.Length(min=1, max=len(CATEGORIES)))
    workflow_id = fields.String(validate=ID)
    depends_on = fields.List(fields.String(validate=ID), validate=validate.Length(max=1000))

    @validates_schema
    def _depends_on_needs_workflow(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("depends_on") and not data.get("workflow_id"):
            raise ValidationError("workflow_id is required when depends_on is specified",
                                  field_name="depends_on")


class JobCancelSchema(Schema):
    reason = fields.String(load_default="User requested cancellation",
                           validate=validate.Length(max=500))
    # Also a running job: it stops at its next progress report.
    terminate = fields.Boolean(load_default=False)


class JobListQuery(Schema):
    status = fields.String(validate=validate.OneOf([str(s) for s in JobStatus]))
    type = fields.String(validate=validate.Length(min=1, max=100))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    cursor = fields.String(validate=validate.Length(max=200))


class TimeframeQuery(Schema):
    timeframe = fields.String(load_default="day",
                              validate=validate.OneOf(["hour", "day", "week"]))


class JobSchema(Schema):
    """A job as the status endpoint shows it."""

    id = fields.String()
    type = fields.String()
    status = fields.String()
    progress = fields.Integer(dump_default=0)
    prompt = fields.String(dump_default=None)
    parameters = fields.Dict(dump_default=dict)
    priority = fields.Integer()
    requirements = fields.Dict()
    created_at = fields.String()
    started_at = fields.String(dump_default=None)
    completed_at = fields.String(dump_default=None)
    result = fields.Raw(dump_default=None)
    error = fields.Raw(dump_default=None)
    worker_id = fields.String(dump_default=None)
    machine_id = fields.String(dump_default=None)
    workflow_id = fields.String(dump_default=None)
    correlation_id = fields.String(dump_default=None)
    attempts = fields.Integer(dump_default=0)
    retries = fields.Integer(dump_default=0)
    retry_count = fields.Integer(dump_default=0)
    timeout_seconds = fields.Integer(attribute="timeout")
    step_index = fields.Integer(dump_default=None)
    # Why it is still pending: no online machine can run it yet (README: GPU fleet).
    waiting_reason = fields.String(dump_default=None)
    gpu_index = fields.Integer(dump_default=None)
    gpu_name = fields.String(dump_default=None)
    # Milliseconds from becoming pending to being claimed, for the latest run.
    queue_wait_ms = fields.Integer(dump_default=None)


JOB_SUBMIT = JobSubmitSchema()
JOB_CANCEL = JobCancelSchema()
JOB_LIST_QUERY = JobListQuery()
TIMEFRAME_QUERY = TimeframeQuery()
JOB = JobSchema()
