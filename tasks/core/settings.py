"""Settings: the one place that reads the environment, for every process.

Every process (web, worker, flower, the dev stack) builds a `Settings` from the
environment and optional overrides; nothing else reads `os.environ`. It lives
beside the tasks, not in the web layer, because workers need it as much as the API. A setting
that is unknown or malformed stops the process at start-up with a message that
names the variable, instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.core.errors import ConfigError
from tasks.core.names import LABEL_KEY, LABEL_VALUE, MACHINE_ID

ENV_PREFIX = "CHORDLINE_"
OPERATOR_TENANT = "*"
# A read-only operator: sees every tenant's jobs, the fleet and the console, acts on nothing.
VIEWER = "@viewer"


# Read by the `chordline` command-line client (app/client/config.py), not by the server.
CLIENT_VARS = frozenset({"CHORDLINE_API_URL", "CHORDLINE_API_KEY"})
# Read by `make run` and the tests when they start a Redis (app/embedded_redis.py).
REDIS_SERVER_VAR = "CHORDLINE_REDIS_SERVER"
TOOL_VARS = frozenset({REDIS_SERVER_VAR})


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _parse_api_keys(raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, tenant = pair.partition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise ValueError(f"expected key=tenant pairs separated by commas, got {pair!r}")
        if len(key) < 8:
            raise ValueError("every API key must be at least 8 characters long")
        if tenant.startswith("@") and tenant != VIEWER:
            raise ValueError(f"the only role is {VIEWER}, got {tenant!r}")
        keys[key] = tenant
    return keys


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# What CHORDLINE_GPUS declares: (name, GB) per GPU; `none` (or empty) declares a CPU-only node.
DeclaredGpus = tuple[tuple[str, float], ...]


def _parse_gpus(raw: str) -> DeclaredGpus:
    if raw.strip().lower() in {"", "none"}:
        return ()
    gpus = []
    for item in _parse_list(raw):
        name, sep, size = item.rpartition(":")
        name = name.strip()
        if not sep or not name or len(name) > 64 or "," in name:
            raise ValueError(f"expected NAME:GB entries such as A100:80, got {item!r}")
        gb = float(size)
        if not 0 < gb <= 4096:
            raise ValueError(f"GPU memory must be between 0 and 4096 GB, got {size!r}")
        gpus.append((name, gb))
    return tuple(gpus)


def _parse_labels(raw: str) -> dict[str, str]:
    labels = {}
    for pair in _parse_list(raw):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise ValueError(f"expected key=value labels (letters, digits, . _ - /), "
                             f"got {pair!r}")
        labels[key] = value
    return labels


def _env(name: str, parse: Callable[[str], Any] = str) -> dict[str, Any]:
    return {"env": name, "parse": parse}


@dataclass(frozen=True)
class Settings:
    """Typed settings with safe defaults; `metadata["env"]` names the variable."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_env("REDIS_URL"))
    broker_url: str = field(default="", metadata=_env("CELERY_BROKER_URL"))
    port: int = field(default=8000, metadata=_env("PORT", int))
    api_keys: Mapping[str, str] = field(
        default_factory=dict, metadata=_env("CHORDLINE_API_KEYS", _parse_api_keys)
    )
    artifact_dir: str = field(default="var/artifacts", metadata=_env("CHORDLINE_ARTIFACT_DIR"))
    test_handlers: bool = field(
        default=False, metadata=_env("CHORDLINE_TEST_HANDLERS", _parse_bool)
    )
    # The Pillow painters answer text-to-image, image-to-image and controlnet jobs on a
    # worker only with this on (make run, the tests): a production node never paints.
    preview_handlers: bool = field(
        default=False, metadata=_env("CHORDLINE_PREVIEW_HANDLERS", _parse_bool)
    )
    handler_modules: tuple[str, ...] = field(
        default=(), metadata=_env("CHORDLINE_HANDLER_MODULES", _parse_list)
    )
    machine_id: str = field(
        default_factory=socket.gethostname, metadata=_env("CHORDLINE_MACHINE_ID")
    )
    # The fleet (README: GPU fleet). Unset, CHORDLINE_GPUS means "detect" (NVML, then
    # torch); set, it declares the node's GPUs instead. A GPU worker serves one of them.
    gpus: DeclaredGpus | None = field(default=None, metadata=_env("CHORDLINE_GPUS", _parse_gpus))
    gpu_index: int | None = field(default=None, metadata=_env("CHORDLINE_GPU_INDEX", int))
    machine_labels: Mapping[str, str] = field(
        default_factory=dict, metadata=_env("CHORDLINE_MACHINE_LABELS", _parse_labels)
    )
    models_file: str = field(default="", metadata=_env("CHORDLINE_MODELS"))
    # How often an idle worker looks again at what to pull, and how long a job may
    # wait before every worker that can run it pulls it first (the starvation bound).
    routing_interval: float = field(
        default=1.0, metadata=_env("CHORDLINE_ROUTING_INTERVAL", float)
    )
    routing_max_wait: float = field(
        default=60.0, metadata=_env("CHORDLINE_ROUTING_MAX_WAIT", float)
    )
    queue: str = field(default="chordline", metadata=_env("CHORDLINE_QUEUE"))
    log_level: str = field(default="INFO", metadata=_env("CHORDLINE_LOG_LEVEL"))
    redis_timeout: float = field(default=5.0, metadata=_env("CHORDLINE_REDIS_TIMEOUT", float))
    # Connections each pool of a process keeps to Redis; a request that finds them all
    # busy waits its turn (tasks/services.py) rather than fail.
    redis_max_connections: int = field(
        default=100, metadata=_env("CHORDLINE_REDIS_MAX_CONNECTIONS", int))
    # Fault handling: a running job's lease must be renewed within `lease_seconds`,
    # or the reaper (every `reaper_interval` seconds) queues it again.
    lease_seconds: float = field(default=20.0, metadata=_env("CHORDLINE_LEASE_SECONDS", float))
    reaper_interval: float = field(default=5.0, metadata=_env("CHORDLINE_REAPER_INTERVAL", float))
    max_deliveries: int = field(default=3, metadata=_env("CHORDLINE_MAX_DELIVERIES", int))
    outbox_grace: float = field(
        default=30.0, metadata=_env("CHORDLINE_OUTBOX_GRACE_SECONDS", float)
    )
    heartbeat_interval: float = field(
        default=5.0, metadata=_env("CHORDLINE_HEARTBEAT_INTERVAL", float)
    )
    # Celery transport: far above the longest GPU step (celery#5935) since the
    # lease, not the visibility timeout, is what recovers lost jobs quickly.
    visibility_timeout: int = field(
        default=7200, metadata=_env("CHORDLINE_VISIBILITY_TIMEOUT", int)
    )
    result_expires: int = field(
        default=7 * 86400, metadata=_env("CHORDLINE_RESULT_EXPIRES", int)
    )
    job_retention: int = field(default=7 * 86400, metadata=_env("CHORDLINE_JOB_RETENTION", int))
    job_timeout: int = field(default=1800, metadata=_env("CHORDLINE_JOB_TIMEOUT", int))
    max_job_timeout: int = field(default=6 * 3600, metadata=_env("CHORDLINE_MAX_JOB_TIMEOUT", int))
    max_retries: int = field(default=10, metadata=_env("CHORDLINE_MAX_RETRIES", int))
    max_body_bytes: int = field(default=1 << 20, metadata=_env("CHORDLINE_MAX_BODY_BYTES", int))
    max_upload_bytes: int = field(
        default=20 << 20, metadata=_env("CHORDLINE_MAX_UPLOAD_BYTES", int)
    )
    max_prompt_length: int = field(
        default=2000, metadata=_env("CHORDLINE_MAX_PROMPT_LENGTH", int)
    )
    max_image_side: int = field(default=2048, metadata=_env("CHORDLINE_MAX_IMAGE_SIDE", int))
    max_workflow_steps: int = field(
        default=50, metadata=_env("CHORDLINE_MAX_WORKFLOW_STEPS", int)
    )
    max_output_side: int = field(default=8192, metadata=_env("CHORDLINE_MAX_OUTPUT_SIDE", int))
    # Saga: a step's compensation is retried this many times, after a backoff
    # that starts here (seconds) and doubles, before the workflow ends compensation_failed.
    compensation_retries: int = field(
        default=3, metadata=_env("CHORDLINE_COMPENSATION_RETRIES", int)
    )
    compensation_backoff: float = field(
        default=2.0, metadata=_env("CHORDLINE_COMPENSATION_BACKOFF", float)
    )
    # Events: the global log keeps this many seconds (each job's and workflow's
    # own history lives as long as the record, `job_retention`).
    event_retention: int = field(default=86400, metadata=_env("CHORDLINE_EVENT_RETENTION", int))
    # WebSocket: events a socket may have unsent before it is closed as too slow
    # (1013), the keep-alive ping period, and subscriptions per socket.
    ws_queue_size: int = field(default=1000, metadata=_env("CHORDLINE_WS_QUEUE_SIZE", int))
    ws_ping_interval: float = field(
        default=25.0, metadata=_env("CHORDLINE_WS_PING_INTERVAL", float)
    )
    ws_max_subscriptions: int = field(
        default=100, metadata=_env("CHORDLINE_WS_MAX_SUBSCRIPTIONS", int)
    )
    # The operator console (/dashboard): what signs its session cookies (unset, a
    # random secret kept in Redis, shared by every web process and kept across
    # restarts), how long a sign-in lasts, and whether the cookie needs HTTPS.
    secret_key: str = field(default="", metadata=_env("CHORDLINE_SECRET_KEY"))
    console_session_seconds: int = field(
        default=8 * 3600, metadata=_env("CHORDLINE_CONSOLE_SESSION_SECONDS", int)
    )
    secure_cookies: bool = field(
        default=False, metadata=_env("CHORDLINE_SECURE_COOKIES", _parse_bool)
    )
    # How often a worker's reaper deletes the image files whose records expired (at
    # most once per interval per artifact directory, however many machines share it).
    artifact_sweep_interval: float = field(
        default=3600.0, metadata=_env("CHORDLINE_ARTIFACT_SWEEP_INTERVAL", float)
    )
    # Hosts a webhook may reach although they resolve to private addresses
    # (tasks/webhooks/egress.py): a receiver inside your network; `make run` and the tests'.
    webhook_allow_hosts: tuple[str, ...] = field(
        default=(), metadata=_env("CHORDLINE_WEBHOOK_ALLOW_HOSTS", _parse_list)
    )
    # Webhook delivery (tasks/webhooks/courier.py): retried for this long after its event (it
    # must not outlive the record, so at most `job_retention`), after a backoff that
    # starts here (seconds) and doubles up to the cap; each attempt's connect and
    # whole-exchange timeouts; senders per worker; how long a rotated-out signing
    # secret still signs.
    webhook_max_age: float = field(
        default=86400.0, metadata=_env("CHORDLINE_WEBHOOK_MAX_AGE", float)
    )
    webhook_retry_base: float = field(
        default=5.0, metadata=_env("CHORDLINE_WEBHOOK_RETRY_BASE", float)
    )
    webhook_retry_cap: float = field(
        default=3600.0, metadata=_env("CHORDLINE_WEBHOOK_RETRY_CAP", float)
    )
    webhook_connect_timeout: float = field(
        default=5.0, metadata=_env("CHORDLINE_WEBHOOK_CONNECT_TIMEOUT", float)
    )
    webhook_timeout: float = field(
        default=10.0, metadata=_env("CHORDLINE_WEBHOOK_TIMEOUT", float)
    )
    webhook_senders: int = field(default=8, metadata=_env("CHORDLINE_WEBHOOK_SENDERS", int))
    webhook_secret_grace: float = field(
        default=86400.0, metadata=_env("CHORDLINE_WEBHOOK_SECRET_GRACE", float)
    )
    # Per-tenant quotas (tasks/storage/quotas.py; operators are exempt): submissions a second
    # (bursts of twice that), unfinished (pending and waiting) jobs, highest priority.
    quota_submits_per_second: float = field(
        default=20.0, metadata=_env("CHORDLINE_QUOTA_SUBMITS_PER_SECOND", float)
    )
    quota_unfinished_jobs: int = field(
        default=10_000, metadata=_env("CHORDLINE_QUOTA_UNFINISHED_JOBS", int)
    )
    quota_max_priority: int = field(
        default=100, metadata=_env("CHORDLINE_QUOTA_MAX_PRIORITY", int)
    )
    quota_websockets: int = field(default=100, metadata=_env("CHORDLINE_QUOTA_WEBSOCKETS", int))
    # Bytes of images a tenant may keep (uploads and outputs, until they expire).
    quota_storage_bytes: int = field(
        default=10 << 30, metadata=_env("CHORDLINE_QUOTA_STORAGE_BYTES", int)
    )
    quota_replay_events: int = field(
        default=10_000, metadata=_env("CHORDLINE_QUOTA_REPLAY_EVENTS", int)
    )
    # Where each gunicorn worker keeps its own metrics for /metrics to sum
    # (prometheus_client's multiprocess mode; app/gunicorn_conf.py sets one up).
    prometheus_multiproc_dir: str = field(default="", metadata=_env("PROMETHEUS_MULTIPROC_DIR"))
    # Entries the audit log keeps (oldest dropped first).
    audit_max_entries: int = field(
        default=100_000, metadata=_env("CHORDLINE_AUDIT_MAX_ENTRIES", int)
    )

    def __post_init__(self) -> None:
        if not self.broker_url:
            object.__setattr__(self, "broker_url", self.redis_url)
        for name in ("redis_url", "broker_url"):
            if "://" not in getattr(self, name):
                raise ConfigError(f"{_var(name)} must be a URL such as redis://host:6379/0")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must use redis://, rediss:// or unix://")
        if not 0 < self.port < 65536:
            raise ConfigError("PORT must be between 1 and 65535")
        for name in ("lease_seconds", "reaper_interval", "heartbeat_interval", "redis_timeout",
                     "max_deliveries", "job_timeout", "max_body_bytes", "max_upload_bytes",
                     "max_prompt_length", "max_image_side", "max_output_side",
                     "max_workflow_steps", "event_retention", "ws_queue_size",
                     "ws_ping_interval", "ws_max_subscriptions", "compensation_backoff",
                     "routing_interval", "routing_max_wait", "console_session_seconds",
                     "audit_max_entries", "quota_submits_per_second", "quota_unfinished_jobs",
                     "artifact_sweep_interval", "quota_websockets", "quota_replay_events",
                     "quota_storage_bytes",
                     "webhook_max_age", "webhook_retry_base", "webhook_retry_cap",
                     "webhook_connect_timeout", "webhook_timeout", "webhook_senders",
                     "webhook_secret_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_var(name)} must be positive")
        if not 0 <= self.quota_max_priority <= 100:
            raise ConfigError("CHORDLINE_QUOTA_MAX_PRIORITY must be between 0 and 100")
        if self.secret_key and len(self.secret_key) < 32:
            raise ConfigError("CHORDLINE_SECRET_KEY must be at least 32 characters long")
        if not MACHINE_ID.match(self.machine_id):
            raise ConfigError("CHORDLINE_MACHINE_ID must be 1-128 letters, digits, . _ -")
        if self.gpu_index is not None and self.gpu_index < 0:
            raise ConfigError("CHORDLINE_GPU_INDEX must not be negative")
        if self.compensation_retries < 0:
            raise ConfigError("CHORDLINE_COMPENSATION_RETRIES must not be negative")
        if self.reaper_interval >= self.lease_seconds:
            raise ConfigError(
                "CHORDLINE_REAPER_INTERVAL must be shorter than CHORDLINE_LEASE_SECONDS")
        if self.event_retention > self.job_retention:
            # The global log refers to events kept in their records (tasks/core/events.py).
            raise ConfigError(
                "CHORDLINE_EVENT_RETENTION must not exceed CHORDLINE_JOB_RETENTION")
        if self.webhook_max_age > self.job_retention:
            # A delivery's record expires with its job's.
            raise ConfigError(
                "CHORDLINE_WEBHOOK_MAX_AGE must not exceed CHORDLINE_JOB_RETENTION")
        if self.job_timeout > self.max_job_timeout:
            raise ConfigError("CHORDLINE_JOB_TIMEOUT must not exceed CHORDLINE_MAX_JOB_TIMEOUT")
        if self.result_expires < 4 * (self.max_job_timeout + 30):
            # Chord counters expire with result_expires: a chord whose header runs
            # longer would never fire its body.
            raise ConfigError("CHORDLINE_RESULT_EXPIRES must be at least four times "
                              "CHORDLINE_MAX_JOB_TIMEOUT (chord state expires with it)")

    @property
    def liveness_seconds(self) -> float:
        """How long a worker (and its machine) counts as alive after its last beat."""
        return max(1.0, round(self.heartbeat_interval * 3))

    @property
    def broker_is_store(self) -> bool:
        """The broker is the job store's own Redis: one server, one database."""
        return self.broker_is_redis and _same_redis(self.broker_url, self.redis_url)

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://", "unix://"))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, then the environment, then `overrides` (tests win)."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        known_vars = {f.metadata["env"] for f in fields.values()}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX)
                         and k not in known_vars | CLIENT_VARS | TOOL_VARS)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for f in fields.values():
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']} is malformed: {exc}") from None
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ConfigError(f"unknown setting override: {name}")
            values[name] = value
        return cls(**values)


def _var(name: str) -> str:
    return {f.name: f for f in dataclasses.fields(Settings)}[name].metadata["env"]


def _same_redis(a: str, b: str) -> bool:
    """Do two Redis URLs name one server and database (not merely equal text)?"""
    from redis.connection import parse_url

    def where(url: str) -> tuple[Any, ...]:
        parsed = parse_url(url)
        return (parsed.get("path") or parsed.get("host", "localhost"),
                int(parsed.get("port", 6379)), int(parsed.get("db", 0)))

    return where(a) == where(b)
