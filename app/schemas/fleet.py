"""What the operators' routes and the health checks answer, as schemas for the OpenAPI
document (app/openapi/): machines (tasks/fleet/machines.py's `machine_view`), the overview
(tasks/overview.py), the audit log (app/api/__init__.py's `record_action`) and health.

A GPU and a minute of the overview's history are open records (whatever the node
reported, whatever outcomes that minute counted), so their schemas allow other keys.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from app.schemas.responses import ISO, always, flag

MACHINE_STATUSES = ["online", "draining", "offline"]


class GpuSchema(Schema):
    """A GPU as its node reported it, with what it holds and runs now."""

    class Meta:
        unknown = INCLUDE

    index = fields.Integer(required=True)
    memory_total_mb = fields.Float(required=True)
    memory_free_mb = fields.Float(allow_none=True)
    utilization = fields.Float(allow_none=True, metadata={"description": "Percent"})
    models_loaded = fields.List(fields.String())
    worker = fields.String(allow_none=True)
    running_jobs = fields.List(fields.String())


class MachineSchema(Schema):
    id = always(fields.String)
    status = fields.String(required=True, validate=validate.OneOf(MACHINE_STATUSES))
    labels = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    gpus = fields.List(fields.Nested(GpuSchema), required=True)
    models_available = fields.List(fields.Raw(), required=True)
    models_unavailable = fields.Dict(required=True, metadata={
        "description": "Model name: why it could not load"})
    job_types = fields.List(fields.String(), required=True)
    gpu_job_types = fields.List(fields.String(), required=True)
    running_jobs = fields.List(fields.String(), required=True)
    workers = fields.List(fields.String(), required=True)
    last_seen = always(fields.String, metadata=ISO)
    registered_at = always(fields.String, metadata=ISO)
    detected_by = always(fields.String)
    driver_version = always(fields.String)
    cuda_version = always(fields.String)


class MachineListSchema(Schema):
    success = flag(True)
    machines = fields.List(fields.Nested(MachineSchema), required=True)


class MachineResultSchema(Schema):
    success = flag(True)
    machine = fields.Nested(MachineSchema, required=True)


class MinuteSchema(Schema):
    """Jobs that ended in one minute, by outcome."""

    class Meta:
        unknown = INCLUDE

    minute = fields.Integer(required=True, metadata={"description": "Seconds since the epoch"})


class LastHourSchema(Schema):
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)
    failure_rate = fields.Float(required=True)
    per_minute = fields.List(fields.Nested(MinuteSchema), required=True)


class QueueDepthSchema(Schema):
    queue = fields.String(required=True)
    job_type = fields.String(required=True)
    model = fields.String(required=True)
    gpu_memory = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    oldest_wait_seconds = always(fields.Float)
    messages = always(fields.Integer, metadata={"description": "Null where the broker is "
                                                               "not Redis"})


class OverviewSchema(Schema):
    success = flag(True)
    jobs = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    workflows = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    last_hour = fields.Nested(LastHourSchema, required=True)
    queues = fields.List(fields.Nested(QueueDepthSchema), required=True)
    machines = fields.Dict(keys=fields.String(validate=validate.OneOf(MACHINE_STATUSES)),
                           values=fields.Integer(), required=True)
    gpus = fields.Integer(required=True)


class AuditEntrySchema(Schema):
    id = fields.String(required=True)
    ts = fields.String(required=True, metadata=ISO)
    who = fields.String(required=True, metadata={"description": "Role and key fingerprint"})
    role = always(fields.String)
    via = fields.String(required=True, validate=validate.OneOf(["key", "console"]))
    action = fields.String(required=True)
    target = fields.Dict(required=True)
    method = fields.String(required=True)
    path = fields.String(required=True)
    status = fields.Integer(required=True)
    outcome = fields.String(required=True, metadata={"description": "`ok`, or an error code"})
    correlation_id = always(fields.String)


class AuditPageSchema(Schema):
    success = flag(True)
    entries = fields.List(fields.Nested(AuditEntrySchema), required=True)
    next_before = always(fields.String, metadata={"description": "Pass as `before` for more"})


class CheckSchema(Schema):
    status = fields.String(required=True,
                           validate=validate.OneOf(["healthy", "degraded", "unhealthy"]))
    latency_ms = fields.Float()
    error = fields.String()
    online = fields.Integer(metadata={"description": "Workers with a live heartbeat"})


class ChecksSchema(Schema):
    redis = fields.Nested(CheckSchema, required=True)
    workers = fields.Nested(CheckSchema, metadata={"description": "When Redis answers"})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["healthy", "unhealthy"]))
    checks = fields.Nested(ChecksSchema, required=True)
    timestamp = fields.String(required=True, metadata=ISO)


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "not_ready"]))
    timestamp = fields.String(required=True, metadata=ISO)
