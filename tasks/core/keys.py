"""Redis key names: the one place that spells them.

Lua scripts never spell key names themselves: they receive them as KEYS, read
them from a record's hash, or derive them from a record's fields with the
functions `lua_functions` writes from the ones here (so a record need not store
what its id and tenant already say).
"""

from __future__ import annotations

import re

from tasks.core.statuses import JobStatus

# What a job, workflow or artifact id may look like, checked at the edge, so a
# crafted one (`abc:events`) can never name another key.
RECORD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
PREFIX = "chordline"
ALL_TENANTS = "*"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def index_all(scope: str) -> str:
    """Every job of a scope (a tenant, or `*` for all), scored by creation order."""
    return f"{PREFIX}:idx:{scope}:all"


INDEX_PATTERN = f"{PREFIX}:idx:*"
PRUNE_LOCK = f"{PREFIX}:prune-lock"
# Every tenant and job type that ever had a record: what names the indexes that the
# retention sweep visits (tasks/storage/retention.py).
INDEX_TENANTS = f"{PREFIX}:indexed:tenants"
INDEX_TYPES = f"{PREFIX}:indexed:types"
# Set once the indexes written before that registry are registered too.
INDEX_BACKFILLED = f"{PREFIX}:indexed:backfilled"


def status_index_prefix(scope: str) -> str:
    return f"{PREFIX}:idx:{scope}:status:"


def status_index(scope: str, status: JobStatus | str) -> str:
    return status_index_prefix(scope) + str(status)


def type_index(scope: str, job_type: str) -> str:
    return f"{PREFIX}:idx:{scope}:type:{job_type}"


def index_scopes(tenant: str) -> tuple[str, str]:
    return (tenant, ALL_TENANTS)


SEQUENCE = f"{PREFIX}:seq"
# Jobs marked pending whose broker message is not yet known to be published,
# scored by when the reaper should publish them again (ms).
OUTBOX = f"{PREFIX}:outbox"
# Running jobs scored by lease deadline (ms): the in-flight set the reaper scans.
LEASES = f"{PREFIX}:leases"
WORKERS = f"{PREFIX}:workers"
WORKER_PREFIX = f"{PREFIX}:worker:"


def worker(hostname: str) -> str:
    return WORKER_PREFIX + hostname


def worker_jobs(hostname: str) -> str:
    return f"{PREFIX}:worker:{hostname}:jobs"


# Every machine ever registered or seen, scored by its last beat (ms).
MACHINES = f"{PREFIX}:machines"


def machine(machine_id: str) -> str:
    return f"{PREFIX}:machine:{machine_id}"


def machine_workers(machine_id: str) -> str:
    """The machine's workers (one per GPU, or its CPU worker), scored by last beat (ms)."""
    return f"{PREFIX}:machine:{machine_id}:workers"


# Routes (tasks/fleet/offers.py): queue name -> route (JSON), registered whenever one of
# its jobs becomes pending, and when that last happened (ms), for the sweep.
ROUTES = f"{PREFIX}:routes"
ROUTES_USED = f"{PREFIX}:routes:used"
# Measured seconds per route's run and per model's load (placement estimates).
ESTIMATES = f"{PREFIX}:routing:estimates"
# Once per interval, one worker re-explains the routes no machine can run; what it
# last said of each route, and up to when (ms) it has seen the route's jobs.
ROUTE_SWEEP_LOCK = f"{PREFIX}:routes:sweep-lock"
ROUTES_EXPLAINED = f"{PREFIX}:routes:explained"


def route_pending(queue: str) -> str:
    """A route's pending jobs, scored by when each became pending (ms)."""
    return f"{PREFIX}:route:{queue}:pending"


def workflow(workflow_id: str) -> str:
    return f"{PREFIX}:workflow:{workflow_id}"


def workflow_index_all(scope: str) -> str:
    return f"{PREFIX}:widx:{scope}:all"


def workflow_status_index_prefix(scope: str) -> str:
    return f"{PREFIX}:widx:{scope}:status:"


def workflow_status_index(scope: str, status: str) -> str:
    return workflow_status_index_prefix(scope) + status


WORKFLOW_INDEX_PATTERN = f"{PREFIX}:widx:*"
# Workflows whose canvas is not yet known to be published, scored by when the
# reaper should publish it again (ms).
WORKFLOW_OUTBOX = f"{PREFIX}:workflow-outbox"
# Workflows whose compensation must be (re)published by the score (ms): queued,
# waiting out a retry backoff, or running under a lease the run keeps renewing.
SAGA_OUTBOX = f"{PREFIX}:saga-outbox"


# Every event, in order (a record's by reference): what operators replay (tasks/core/events.py).
EVENT_LOG = f"{PREFIX}:events"


def event_channel(database: int) -> str:
    """The live pub/sub channel; channels span databases, so its name carries the database."""
    return f"{PREFIX}:events:live:{database}"


def artifact(artifact_id: str) -> str:
    return f"{PREFIX}:artifact:{artifact_id}"


def job_artifacts(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:artifacts"


# Fleet-wide counts for /metrics and the console (tasks/core/metrics.py).
METRICS_COUNTS = f"{PREFIX}:metrics:counts"
METRICS_HISTOGRAMS = f"{PREFIX}:metrics:histograms"
METRICS_EVENTS = f"{PREFIX}:metrics:events"
METRICS_CELERY = f"{PREFIX}:metrics:celery"
METRICS_MINUTE_PREFIX = f"{PREFIX}:metrics:minute:"
# Every operator action (tasks/storage/audit.py).
AUDIT_LOG = f"{PREFIX}:audit"
# The console's signing secret, sessions and refused sign-ins by address (app/sessions.py).
CONSOLE_SECRET = f"{PREFIX}:console:secret"
CONSOLE_SESSION_PREFIX = f"{PREFIX}:console:session:"
CONSOLE_REFUSED_PREFIX = f"{PREFIX}:console:refused:"
# Single-use WebSocket tickets (app/tickets.py).
WS_TICKET_PREFIX = f"{PREFIX}:ws-ticket:"


def idempotency(tenant: str, key_digest: str) -> str:
    """An Idempotency-Key's record, scoped to its tenant (tasks/storage/idempotency.py)."""
    return f"{PREFIX}:idempotency:{tenant}:{key_digest}"


def quota_submits(tenant: str) -> str:
    """The tenant's submission token bucket (tasks/storage/quotas.py)."""
    return f"{PREFIX}:quota:submits:{tenant}"


def quota_storage(tenant: str) -> str:
    """The tenant's stored bytes by the hour they expire in (tasks/storage/quotas.py)."""
    return f"{PREFIX}:quota:storage:{tenant}"


def quota_sockets(tenant: str) -> str:
    """The tenant's connection seats: socket id -> expiry, ms (tasks/storage/quotas.py)."""
    return f"{PREFIX}:quota:sockets:{tenant}"


# Webhooks (tasks/webhooks/store.py): a job's or workflow's deliveries (delivery id ->
# JSON), its queue of undelivered ones (the key plus this suffix, head first: one
# at a time, so each subject's events arrive in order), the subjects with a
# delivery due (scored by when, ms; a claimed one by when its lease runs out), and
# each tenant's signing secrets.
WEBHOOK_QUEUE_SUFFIX = ":queue"
WEBHOOK_OUTBOX = f"{PREFIX}:webhook-outbox"


def job_webhooks(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:webhooks"


def workflow_webhooks(workflow_id: str) -> str:
    return f"{PREFIX}:workflow:{workflow_id}:webhooks"


def webhook_queue(webhooks_key: str) -> str:
    return webhooks_key + WEBHOOK_QUEUE_SUFFIX


def webhook_secret(tenant: str) -> str:
    return f"{PREFIX}:webhook-secret:{tenant}"


def lua_functions() -> str:
    """Lua functions that spell the key names scripts derive from a record's fields,
    written from the Python functions above: one definition of each name."""
    derived = {"status_index_prefix": status_index_prefix,
               "workflow_status_index_prefix": workflow_status_index_prefix,
               "route_pending_key": route_pending}
    lines = [f"local ALL_TENANTS = '{ALL_TENANTS}'", f"local INDEX_TENANTS = '{INDEX_TENANTS}'",
             f"local INDEX_TYPES = '{INDEX_TYPES}'"]
    for name, spell in derived.items():
        head, _, tail = spell("\0").partition("\0")
        lines.append(f"local function {name}(part) return '{head}' .. part .. '{tail}' end")
    return "\n".join(lines) + "\n"


# The broker messages each worker process holds unacknowledged (tasks/fleet/reservations.py),
# on the broker's Redis beside kombu's own `unacked` hash: delivery tag -> when it came
# (ms), per worker process ("hostname|boot id"), and the set of processes that have one.
RESERVERS = f"{PREFIX}:reservers"


def reservations(instance: str) -> str:
    return f"{PREFIX}:reserved:{instance}"
