"""Every route of the API as the OpenAPI document describes it: one row per operation.

A row names what is particular to its route: the schemas it reads (app/schemas/*) and
answers (app/schemas/responses.py, fleet.py), its headers, and the error codes only it
can answer. What every route of a kind answers (401 without a key, 403 for a viewer's
change, 404 for an id that cannot be one, 400 for a bad x-correlation-id...) is added by
app/openapi/document.py from `access`, the method and the path, so it is said once.
tests/app/test_openapi.py checks that the rows and `app.url_map` name the same routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from marshmallow import Schema

from app.schemas import fleet, responses
from app.schemas.audit import AUDIT_QUERY
from app.schemas.events import EVENT_QUERY
from app.schemas.jobs import JOB_CANCEL, JOB_LIST_QUERY, JOB_SUBMIT, TIMEFRAME_QUERY
from app.schemas.machines import MACHINE_REGISTER
from app.schemas.workflows import WORKFLOW_CANCEL, WORKFLOW_CREATE, WORKFLOW_LIST_QUERY


class Access(StrEnum):
    PUBLIC = "public"  # no key
    KEY = "key"  # any key: a tenant sees its own records; a viewer may only read
    STAFF = "staff"  # an operator's or a viewer's key


@dataclass(frozen=True)
class Answer:
    """A success: its schema (a marshmallow schema, or a JSON Schema for other media)."""

    description: str
    schema: type[Schema] | Mapping[str, Any] | None = None
    media: str = "application/json"
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Op:
    endpoint: str  # the Flask endpoint, and (dots as underscores) the operationId
    method: str
    path: str
    tag: str
    summary: str
    answers: Mapping[int, Answer]
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    access: Access = Access.KEY
    body: Schema | Mapping[str, Any] | None = None  # a Mapping: the request body's `content`
    body_optional: bool = False
    example: Mapping[str, Any] | None = None  # a body that works, for people and schemathesis
    query: Schema | None = None
    parameters: tuple[str, ...] = ()  # names in components/parameters
    description: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


PAGE = ("INVALID_QUERY", "INVALID_CURSOR")
IDEMPOTENT = {400: ("INVALID_IDEMPOTENCY_KEY",), 409: ("IDEMPOTENCY_KEY_IN_USE",),
              422: ("IDEMPOTENCY_KEY_REUSED",), 429: ("RATE_LIMITED", "QUOTA_EXCEEDED"),
              503: ("BROKER_UNAVAILABLE",)}
REPLAYED = ("Idempotent-Replayed",)
BINARY = {"type": "string", "format": "binary"}


def events_op(endpoint: str, path: str, tag: str, summary: str,
              access: Access = Access.KEY) -> Op:
    return Op(endpoint, "get", path, tag, summary,
              {200: Answer("A page of events, oldest first", responses.EventPageSchema)},
              {400: ("INVALID_QUERY",)}, access=access, query=EVENT_QUERY)


def webhooks_op(endpoint: str, path: str, tag: str) -> Op:
    return Op(endpoint, "get", path, tag, "Webhook deliveries, with their attempts",
              {200: Answer("Deliveries in event order", responses.DeliveryListSchema)})


def stats_op(endpoint: str, path: str, tag: str, schema: type[Schema]) -> Op:
    return Op(endpoint, "get", path, tag, "Counts by status for a recent window",
              {200: Answer("Counts of what was created in the window", schema)},
              {400: ("INVALID_TIMEFRAME",)}, query=TIMEFRAME_QUERY)


def machine_op(endpoint: str, method: str, path: str, summary: str) -> Op:
    return Op(endpoint, method, path, "machines", summary,
              {200: Answer("The machine", fleet.MachineResultSchema)},
              {404: ("MACHINE_NOT_FOUND",)}, access=Access.STAFF)


JOBS = (
    Op("jobs.submit", "post", "/api/jobs/submit", "jobs", "Submit a job",
       {200: Answer("Queued; with `Prefer: wait`, the job as it stands when it is final or "
                    "when the wait ends", responses.JobSubmittedSchema,
                    headers=(*REPLAYED, "Preference-Applied"))},
       {**IDEMPOTENT, 400: ("JOB_SUBMISSION_FAILED", "INVALID_IDEMPOTENCY_KEY"),
        404: ("WORKFLOW_NOT_FOUND",)},
       body=JOB_SUBMIT, parameters=("IdempotencyKey", "PreferWait"), example={
           "type": "text-to-image", "prompt": "a red fox in snow",
           "parameters": {"width": 64, "height": 64, "seed": 7}}),
    Op("jobs.status", "get", "/api/jobs/{job_id}/status", "jobs", "Read a job",
       {200: Answer("The job", responses.JobStatusSchema, headers=("Preference-Applied",))},
       parameters=("PreferWait",)),
    events_op("jobs.events", "/api/jobs/{job_id}/events", "jobs", "A job's events"),
    webhooks_op("jobs.webhooks", "/api/jobs/{job_id}/webhooks", "jobs"),
    Op("jobs.cancel", "post", "/api/jobs/{job_id}/cancel", "jobs", "Cancel a job",
       {200: Answer("Cancelled", responses.MessageSchema)},
       {400: ("INVALID_REQUEST",), 409: ("JOB_NOT_CANCELLABLE",)},
       body=JOB_CANCEL, body_optional=True, example={"reason": "no longer needed"}),
    stats_op("jobs.stats", "/api/jobs/stats", "jobs", responses.JobStatsSchema),
    Op("jobs.list_jobs", "get", "/api/jobs", "jobs", "List jobs, newest first",
       {200: Answer("A page of jobs", responses.JobPageSchema)}, {400: PAGE},
       query=JOB_LIST_QUERY),
)

WORKFLOWS = (
    Op("workflows.create", "post", "/api/workflows", "workflows", "Create a workflow",
       {200: Answer("Its steps are stored and the first are queued",
                    responses.WorkflowCreatedSchema, headers=REPLAYED)},
       {**IDEMPOTENT, 400: ("WORKFLOW_CREATION_FAILED", "INVALID_IDEMPOTENCY_KEY")},
       body=WORKFLOW_CREATE, parameters=("IdempotencyKey",), example={
           "name": "a fox, then larger", "steps": [
               {"type": "text-to-image", "prompt": "a red fox", "parameters": {
                   "width": 64, "height": 64}},
               {"type": "upscale", "depends_on": [0], "parameters": {"scale_factor": 2}}]}),
    Op("workflows.status", "get", "/api/workflows/{workflow_id}/status", "workflows",
       "Read a workflow and its steps",
       {200: Answer("The workflow and its steps", responses.WorkflowStatusSchema)}),
    events_op("workflows.events", "/api/workflows/{workflow_id}/events", "workflows",
              "A workflow's events, with its steps'"),
    webhooks_op("workflows.webhooks", "/api/workflows/{workflow_id}/webhooks", "workflows"),
    Op("workflows.cancel", "post", "/api/workflows/{workflow_id}/cancel", "workflows",
       "Cancel a workflow",
       {200: Answer("Cancelled (or compensating)", responses.WorkflowCancelledSchema)},
       {400: ("INVALID_REQUEST",), 409: ("WORKFLOW_NOT_CANCELLABLE",)},
       body=WORKFLOW_CANCEL, body_optional=True),
    Op("workflows.compensate", "post", "/api/workflows/{workflow_id}/compensate",
       "workflows", "Undo a workflow's completed steps",
       {202: Answer("Compensation started", responses.CompensationStartedSchema)},
       {409: ("WORKFLOW_NOT_COMPENSABLE",)}),
    stats_op("workflows.stats", "/api/workflows/stats", "workflows",
             responses.WorkflowStatsSchema),
    Op("workflows.list_workflows", "get", "/api/workflows", "workflows",
       "List workflows, newest first",
       {200: Answer("A page of workflows", responses.WorkflowPageSchema)}, {400: PAGE},
       query=WORKFLOW_LIST_QUERY),
)

OTHERS = (
    Op("artifacts.upload", "post", "/api/artifacts", "artifacts", "Upload an input image",
       {201: Answer("Stored; use its url as a job's image_url", responses.ArtifactCreatedSchema)},
       {400: ("INVALID_UPLOAD", "INVALID_REQUEST"), 413: ("PAYLOAD_TOO_LARGE",),
        429: ("QUOTA_EXCEEDED",)},
       body={"multipart/form-data": {"schema": {
           "type": "object", "properties": {"file": BINARY}, "required": ["file"]}},
             "application/octet-stream": {"schema": BINARY}},
       description="PNG, JPEG or WebP, as multipart field `file` or as the raw body."),
    Op("artifacts.download", "get", "/api/artifacts/{artifact_id}", "artifacts",
       "Download an image",
       {200: Answer("The image", BINARY, media="image/png"),
        206: Answer("The part a `Range` header asked for", BINARY, media="image/png"),
        304: Answer("Not modified since the `If-None-Match` or `If-Modified-Since` given")},
       {416: ("HTTP_ERROR",)}),
    Op("webhooks.read_secret", "get", "/api/webhooks/secret", "webhooks",
       "Read the webhook signing secret (made on first use)",
       {200: Answer("The current secret", responses.WebhookSecretSchema)},
       {403: ("FORBIDDEN",)}),
    Op("webhooks.rotate_secret", "post", "/api/webhooks/secret", "webhooks",
       "Make a new webhook signing secret",
       {201: Answer("The new secret; the previous one still signs beside it for a grace "
                    "period", responses.WebhookSecretSchema)}),
    events_op("events.all_events", "/api/events", "operators", "Every event (operators)",
              Access.STAFF),
    Op("tickets.issue", "post", "/api/ws-tickets", "websocket",
       "Trade the key for a single-use /ws ticket",
       {201: Answer("A ticket for one handshake within a minute", responses.TicketSchema)}),
    Op("overview.overview", "get", "/api/overview", "operators",
       "Jobs and workflows by status, the last hour, queues and machines",
       {200: Answer("The console's first page, as JSON", fleet.OverviewSchema)},
       access=Access.STAFF),
    Op("audit.audit_log", "get", "/api/audit", "operators", "Operator actions, newest first",
       {200: Answer("A page of the audit log", fleet.AuditPageSchema)},
       {400: ("INVALID_QUERY",)}, access=Access.STAFF, query=AUDIT_QUERY),
)

MACHINES = (
    Op("machines.list_machines", "get", "/api/machines", "machines", "Every machine",
       {200: Answer("Online, draining and offline machines", fleet.MachineListSchema)},
       access=Access.STAFF),
    Op("machines.register", "post", "/api/machines", "machines",
       "Register a machine's labels",
       {200: Answer("Its labels were changed", fleet.MachineResultSchema),
        201: Answer("Registered", fleet.MachineResultSchema)},
       {400: ("MACHINE_REGISTRATION_FAILED",)}, access=Access.STAFF, body=MACHINE_REGISTER,
       example={"id": "gpu-node-7", "labels": {"zone": "eu-west"}}),
    machine_op("machines.get_machine", "get", "/api/machines/{machine_id}", "Read a machine"),
    machine_op("machines.drain", "post", "/api/machines/{machine_id}/drain",
               "Start no new job on a machine"),
    machine_op("machines.resume", "post", "/api/machines/{machine_id}/resume",
               "Start jobs on a machine again"),
)

PLAIN = (
    Op("health.health", "get", "/health", "health", "Health: Redis and the workers",
       {200: Answer("Redis answers (no worker online is `degraded`, still 200)",
                    fleet.HealthSchema),
        503: Answer("Redis does not answer", fleet.HealthSchema)}, access=Access.PUBLIC),
    Op("health.ready", "get", "/health/ready", "health", "Readiness: Redis answers",
       {200: Answer("Ready", fleet.ReadySchema),
        503: Answer("Not ready", fleet.ReadySchema)}, access=Access.PUBLIC),
    Op("metrics.metrics", "get", "/metrics", "operators", "Prometheus metrics",
       {200: Answer("The text exposition format (`text/plain; version=...`)",
                    {"type": "string"}, media="text/plain")},
       access=Access.STAFF,
       description="For Prometheus: `authorization: {type: Bearer, credentials: <key>}`."),
    Op("openapi.spec", "get", "/api/openapi.json", "docs", "This document",
       {200: Answer("OpenAPI 3.1", {"type": "object"})}, access=Access.PUBLIC),
    Op("openapi.docs", "get", "/api/docs", "docs", "This document as a web page",
       {200: Answer("HTML, with no script and nothing from another site",
                    {"type": "string"}, media="text/html")}, access=Access.PUBLIC),
)

OPERATIONS: tuple[Op, ...] = (*JOBS, *WORKFLOWS, *OTHERS, *MACHINES, *PLAIN)
