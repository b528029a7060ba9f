"""The plain objects that own Chordline's behaviour, wired once per process."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tasks.core.context import app_services
from tasks.core.events import EventLog
from tasks.core.metrics import MetricsStore
from tasks.core.settings import Settings
from tasks.fleet.machines import MachineService, MachineStore
from tasks.fleet.model_cache import ModelCache
from tasks.fleet.profile import NodeProfile
from tasks.fleet.reservations import Reservations
from tasks.fleet.routes import RouteStore
from tasks.handlers.base import Limits
from tasks.handlers.registry import HandlerRegistry, build_registry
from tasks.jobs.dispatch import Dispatcher
from tasks.jobs.lifecycle import LeasePolicy, Lifecycle
from tasks.jobs.runner import RunnerServices
from tasks.jobs.service import JobService
from tasks.jobs.store import JobStore
from tasks.overview import Overview
from tasks.storage.artifacts import ArtifactStore
from tasks.storage.audit import AuditLog
from tasks.storage.idempotency import IdempotencyStore
from tasks.storage.quotas import QuotaPolicy, Quotas
from tasks.webhooks.store import WebhookStore
from tasks.workflows.compensation import CompensatorServices
from tasks.workflows.inputs import StepInputs
from tasks.workflows.saga import SagaPolicy, SagaStore
from tasks.workflows.service import WorkflowService
from tasks.workflows.store import WorkflowStore


def redis_client(settings: Settings, *, patient: bool = False,
                 url: str | None = None) -> redis.Redis:
    """A pooled client; the API's answers 503 when Redis is down rather than hang, a
    worker's rides out a restart.

    Only connection errors are retried: a timeout may come after a script ran. The pool
    is a blocking one: redis-py's default pool refuses a connection past its size ("Too
    many connections"), which under a burst of clients answered hundreds of requests
    503; here a request waits for a connection as others finish their command.
    """
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), PATIENT_RETRIES if patient else 1)
    pool = redis.BlockingConnectionPool.from_url(
        url or settings.redis_url, max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT, decode_responses=True, socket_timeout=settings.redis_timeout,
        socket_connect_timeout=min(settings.redis_timeout, 2.0), health_check_interval=30,
        retry=retry, retry_on_error=[redis.ConnectionError],
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client

# About 30 s of reconnect attempts: a Redis restart with AOF replay.
PATIENT_RETRIES = 20
# Seconds a command waits for a free connection of its pool. Each is held for one
# command (bounded by the socket timeout), so a wait this long means Redis is stuck.
POOL_WAIT = 30.0


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    registry: HandlerRegistry
    store: JobStore
    lifecycle: Lifecycle
    artifacts: ArtifactStore
    dispatcher: Dispatcher
    jobs: JobService
    workflow_store: WorkflowStore
    workflows: WorkflowService
    step_inputs: StepInputs
    events: EventLog
    saga: SagaStore
    machines: MachineStore
    machine_service: MachineService
    routes: RouteStore
    metrics: MetricsStore
    audit: AuditLog
    overview: Overview
    idempotency: IdempotencyStore
    webhooks: WebhookStore
    # Set in a worker process (workers/bootstrap.py): its node, and on a GPU worker
    # the models its GPU keeps warm.
    node: NodeProfile | None = None
    models: ModelCache | None = None
    # On a Redis broker: the messages each worker holds (tasks/fleet/reservations.py).
    reservations: Reservations | None = None

    @classmethod
    def build(cls, settings: Settings, celery: Celery) -> Services:
        client = redis_client(settings)
        limits = Limits(settings.max_prompt_length, settings.max_image_side,
                        settings.max_output_side, settings.max_job_timeout)
        registry = build_registry(limits, test_handlers=settings.test_handlers,
                                  modules=settings.handler_modules)
        store = JobStore(client, settings.job_retention)
        patient = redis_client(settings, patient=True)
        lease = LeasePolicy.from_settings(settings)
        lifecycle = Lifecycle(patient, lease)
        artifacts = ArtifactStore(client, settings.artifact_dir, settings.job_retention,
                                  settings.max_image_side, settings.quota_storage_bytes)
        dispatcher = Dispatcher(celery, lifecycle, settings.queue, settings.broker_is_redis,
                                settings.broker_is_store)
        machines = MachineStore(client, settings.liveness_seconds, settings.job_retention)
        quotas = Quotas(client, QuotaPolicy.from_settings(settings))
        webhooks = WebhookStore(patient, settings.webhook_secret_grace)
        jobs = JobService(store, registry, artifacts, dispatcher, lifecycle, machines, settings,
                          quotas, webhooks)
        workflow_store = WorkflowStore(client, store, settings.job_retention)
        saga = SagaStore(patient, SagaPolicy.from_settings(settings, lease))
        workflows = WorkflowService(workflow_store, jobs, dispatcher, lifecycle, saga, celery,
                                    settings.max_workflow_steps)
        step_inputs = StepInputs(client, registry, settings.max_output_side)
        routes = RouteStore(patient)
        metrics = MetricsStore(client)
        broker = redis_client(settings, url=settings.broker_url) if settings.broker_is_redis \
            else None
        overview = Overview(client, broker, settings.queue, routes, machines, metrics)
        return cls(
            settings=settings, redis=client, registry=registry, store=store,
            lifecycle=lifecycle, artifacts=artifacts, dispatcher=dispatcher, jobs=jobs,
            workflow_store=workflow_store, workflows=workflows, step_inputs=step_inputs,
            events=EventLog(client), saga=saga, machines=machines,
            machine_service=MachineService(machines, dispatcher.refresh), routes=routes,
            metrics=metrics, audit=AuditLog(client, settings.audit_max_entries),
            overview=overview, idempotency=IdempotencyStore(client), webhooks=webhooks,
            reservations=Reservations(broker, celery) if broker is not None else None)


def current_services() -> Services:
    """The services of the current Flask app (also inside Celery tasks)."""
    services: Services = app_services()
    return services


def _runs_with(services: Services) -> tuple[RunnerServices, CompensatorServices]:
    """For mypy: the services satisfy what the runner and the compensator use of them."""
    return services, services
