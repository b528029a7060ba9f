"""Workflow request and response schemas (the seed's JSON shapes)."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from app.schemas.jobs import JobFields
from tasks.core.statuses import WorkflowStatus
from tasks.webhooks.store import CATEGORIES
from tasks.workflows.conditions import OPERATORS, PRESENCE

PATH = validate.Regexp(r"^(status|result)(\.[A-Za-z0-9_-]+){0,15}\Z",
                       error="must be `status` or a dotted path under `result`")


class ConditionSchema(Schema):
    step = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    path = fields.String(required=True, validate=[validate.Length(max=300), PATH])
    op = fields.String(required=True, validate=validate.OneOf([*OPERATORS, *PRESENCE]))
    value = fields.Raw(allow_none=True)


class StepSchema(JobFields):
    """A step: a job's fields, its dependencies (earlier step indices) and conditions."""

    priority = fields.Integer(strict=True, validate=validate.Range(
        0, 100, error="Priority must be between 0 and 100"))
    depends_on = fields.List(fields.Integer(strict=True), load_default=list)
    when = fields.List(fields.Nested(ConditionSchema), validate=validate.Length(max=20))

    @pre_load
    def _one_condition_or_many(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("when"), dict):
            return {**data, "when": [data["when"]]}
        return data


class WorkflowCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(max=200),
                         error_messages={"required": "Workflow name is required",
                                         "null": "Workflow name is required"})
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    steps = fields.List(fields.Nested(StepSchema), required=True,
                        error_messages={"required": "Workflow must have at least one step"})
    webhook_url = fields.URL(schemes={"http", "https"}, require_tld=False,
                             validate=validate.Length(max=2048))
    priority = fields.Integer(load_default=50, strict=True, validate=validate.Range(
        0, 100, error="Priority must be between 0 and 100"))
    # Which events go to webhook_url (tasks/webhooks/store.py); default ["completed"].
    webhook_events_filter = fields.List(
        fields.String(validate=validate.OneOf(CATEGORIES)),
        validate=validate.Length(min=1, max=len(CATEGORIES)))

    @validates("name")
    def _name_not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Workflow name is required")

    @validates("steps")
    def _at_least_one(self, value: list[Any], **_: Any) -> None:
        if not value:
            raise ValidationError("Workflow must have at least one step")

    @validates_schema
    def _dependencies(self, data: dict[str, Any], **_: Any) -> None:
        """Dependencies name earlier steps; conditions name dependencies (the seed's rules)."""
        errors: dict[str, list[str]] = {}
        for index, step in enumerate(data.get("steps") or []):
            deps = step.get("depends_on") or []
            problems = []
            if any(d < 0 for d in deps):
                problems.append(f"Step {index}: invalid dependency index")
            if any(d >= index for d in deps):
                problems.append(f"Step {index}: cannot depend on future or self steps")
            if len(set(deps)) != len(deps):
                problems.append(f"Step {index}: a dependency is listed twice")
            for condition in step.get("when") or []:
                if condition["step"] not in deps:
                    problems.append(f"Step {index}: when refers to step {condition['step']}, "
                                    "which is not among its dependencies")
            if problems:
                errors[f"steps.{index}"] = problems
        if errors:
            raise ValidationError(errors)


class WorkflowCancelSchema(Schema):
    reason = fields.String(load_default="User requested cancellation",
                           validate=validate.Length(max=500))
    terminate = fields.Boolean(load_default=False)
    compensate = fields.Boolean(load_default=False)


class WorkflowListQuery(Schema):
    status = fields.String(validate=validate.OneOf([str(s) for s in WorkflowStatus]))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    cursor = fields.String(validate=validate.Length(max=200))


class WorkflowSchema(Schema):
    """A workflow as the status endpoint shows it."""

    id = fields.String()
    name = fields.String()
    description = fields.String(dump_default=None)
    status = fields.String()
    total_steps = fields.Integer()
    completed_steps = fields.Integer()
    progress_percentage = fields.Float()
    created_at = fields.String()
    started_at = fields.String(dump_default=None)
    completed_at = fields.String(dump_default=None)
    error = fields.Raw(dump_default=None)
    correlation_id = fields.String(dump_default=None)
    compensation_started_at = fields.String(dump_default=None)
    # Which step's compensation failed for good, and why (status compensation_failed).
    compensation_error = fields.Raw(dump_default=None)


class StepStatusSchema(Schema):
    step_index = fields.Integer()
    job_id = fields.String()
    type = fields.String(dump_default=None)
    depends_on = fields.List(fields.Integer(), dump_default=list)
    status = fields.String()
    progress = fields.Integer(dump_default=0)
    result = fields.Raw(dump_default=None)
    error = fields.Raw(dump_default=None)
    attempts = fields.Integer(dump_default=0)
    started_at = fields.String(dump_default=None)
    completed_at = fields.String(dump_default=None)
    compensated_at = fields.String(dump_default=None)
    compensation_attempts = fields.Integer(dump_default=0)
    compensation_error = fields.Raw(dump_default=None)


WORKFLOW_CREATE = WorkflowCreateSchema()
WORKFLOW_CANCEL = WorkflowCancelSchema()
WORKFLOW_LIST_QUERY = WorkflowListQuery()
WORKFLOW = WorkflowSchema()
STEP_STATUS = StepStatusSchema()
