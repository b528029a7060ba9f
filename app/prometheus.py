"""GET /metrics: Prometheus' text format, for an operator's or a viewer's key.

Two kinds of series, so that every web process answers the same fleet-wide truth:

- the fleet's (jobs, workflows, queues, Celery tasks, events, machines, GPUs)
  are read from Redis at each scrape (tasks/core/metrics.py, tasks/overview.py): the
  scripts that change a status count it, so no process holds a count of its own
  and a restart loses none;
- this process's own (HTTP requests, open WebSockets) live in prometheus_client
  metrics; under gunicorn each worker writes them to `PROMETHEUS_MULTIPROC_DIR`
  (app/gunicorn_conf.py sets one up and marks dead workers), and any worker's
  scrape sums them all.

Labels are bounded by design: job types, statuses, queues (one per route),
machines and GPUs, Flask endpoint names; never a job id or a tenant's text.
Prometheus reads it with `authorization: {type: Bearer, credentials: <key>}`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.auth import authenticate, require_staff
from tasks.core.clock import now_ms
from tasks.core.metrics import JOB_OUTCOMES, SUBMITTED, Snapshot
from tasks.core.metrics import Histogram as StoredHistogram
from tasks.services import Services, current_services

bp = Blueprint("metrics", __name__)

# This process's own series (registry=None: each scrape collects them into its own registry).
HTTP_REQUESTS = Counter("chordline_http_requests", "HTTP requests answered",
                        ["method", "endpoint", "status"], registry=None)
HTTP_SECONDS = Histogram("chordline_http_request_duration_seconds",
                         "Time to answer an HTTP request", ["method", "endpoint"],
                         registry=None)
WEBSOCKETS = Gauge("chordline_websocket_connections", "WebSocket connections open",
                   multiprocess_mode="livesum", registry=None)
OWN = (HTTP_REQUESTS, HTTP_SECONDS, WEBSOCKETS)


@bp.get("/metrics")
def metrics() -> Response:
    authenticate()
    require_staff()
    services = current_services()
    registry = CollectorRegistry()
    if services.settings.prometheus_multiproc_dir:
        multiprocess.MultiProcessCollector(registry, services.settings.prometheus_multiproc_dir)
    else:
        for metric in OWN:
            registry.register(metric)
    registry.register(FleetCollector(services))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_request_metrics(app: Flask) -> None:
    """Count and time every request by endpoint (the route's name, a bounded label)."""

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            HTTP_SECONDS.labels(request.method, endpoint).observe(time.perf_counter() - started)
        return response


class FleetCollector(Collector):
    """The fleet-wide series, read from Redis at each scrape."""

    def __init__(self, services: Services) -> None:
        self._s = services

    def collect(self) -> Iterator[Metric]:
        snapshot = self._s.metrics.snapshot()
        yield from self._jobs(snapshot)
        yield from self._workflows(snapshot)
        yield from self._queues()
        yield self._celery(snapshot)
        yield from self._fleet()
        yield from self._webhooks()

    def _jobs(self, snapshot: Snapshot) -> Iterator[Metric]:
        for status in (SUBMITTED, *JOB_OUTCOMES):
            yield _counter(f"chordline_jobs_{status}", f"Jobs {status}, by type", ["type"],
                           [([t], n) for t, n in sorted(snapshot.jobs(status).items())])
        jobs, _ = self._s.overview.status_counts()
        yield _gauge("chordline_jobs", "Jobs in each status (within retention)",
                     ["status"], [([s], n) for s, n in jobs.items()])
        for name, help_text in (("run", "Time a job ran, from start to its outcome"),
                                ("queue_wait", "Time a job waited for a worker")):
            family = HistogramMetricFamily(f"chordline_job_{name}_seconds", help_text,
                                           labels=["type"])
            for (kind, job_type), hist in sorted(snapshot.histograms.items()):
                if kind == name:
                    family.add_metric([job_type], _buckets(hist), hist.total)
            yield family
        yield _counter("chordline_events_published", "Events published, by type", ["type"],
                       [([t], n) for t, n in sorted(snapshot.events.items())])

    def _workflows(self, snapshot: Snapshot) -> Iterator[Metric]:
        yield _counter("chordline_workflows_submitted", "Workflows submitted", [],
                       [([], snapshot.workflows(SUBMITTED))])
        yield _counter("chordline_workflows_finished", "Workflows that ended, by outcome",
                       ["outcome"], [([o], snapshot.workflows(o)) for o in
                                     ("completed", "failed", "cancelled", "compensated",
                                      "compensation_failed")])
        yield _counter("chordline_compensations_started", "Sagas begun (a workflow began "
                       "undoing its completed steps)", [], [([], snapshot.workflows(
                           "compensating"))])
        yield _counter("chordline_compensations", "Sagas that ended, by outcome", ["outcome"],
                       [(["completed"], snapshot.workflows("compensated")),
                        (["failed"], snapshot.workflows("compensation_failed"))])

    def _queues(self) -> Iterator[Metric]:
        depths = self._s.overview.queues(now_ms())
        labels = ["queue", "type", "model"]
        yield _gauge("chordline_queue_depth", "Jobs pending on a queue", labels,
                     [([d.queue, d.job_type, d.model], d.pending) for d in depths])
        yield _gauge("chordline_queue_oldest_wait_seconds", "How long the oldest pending job "
                     "of a queue has waited", labels,
                     [([d.queue, d.job_type, d.model], d.oldest_wait_seconds or 0)
                      for d in depths])
        yield _gauge("chordline_celery_queue_length", "Messages waiting in a Celery queue "
                     "(Redis broker only)", ["queue"],
                     [([d.queue], d.messages) for d in depths if d.messages is not None])

    def _webhooks(self) -> Iterator[Metric]:
        subjects, late = self._s.webhooks.backlog()
        yield _gauge("chordline_webhook_backlog", "Jobs and workflows with a webhook delivery "
                     "waiting (due, in flight or retrying)", [], [([], subjects)])
        yield _gauge("chordline_webhook_overdue_seconds", "How long past due the most overdue "
                     "webhook delivery is (0: none is late)", [], [([], late)])

    @staticmethod
    def _celery(snapshot: Snapshot) -> Metric:
        return _counter("chordline_celery_tasks", "Celery task outcomes, by task and state",
                        ["task", "state"], [(list(field.rsplit("|", 1)), n)
                                            for field, n in sorted(snapshot.celery.items())])

    def _fleet(self) -> Iterator[Metric]:
        machines = self._s.machines.describe_all()
        yield _gauge("chordline_machines", "Machines, by status", ["status"],
                     [([s], sum(1 for m in machines if m["status"] == s))
                      for s in ("online", "draining", "offline")])
        workers = [(w, m) for m in machines if m["status"] != "offline" for w in m["workers"]]
        yield _gauge("chordline_celery_worker_up", "A worker that beats", ["worker"],
                     [([w], 1) for w, _ in workers])
        running = {g["worker"]: len(g["running_jobs"]) for m in machines for g in m["gpus"]
                   if g.get("worker")}
        yield _gauge("chordline_celery_worker_tasks_active", "Jobs a worker runs", ["worker"],
                     [([w], running.get(w, 0)) for w, _ in workers])
        gpus = [(m["id"], gpu) for m in machines if m["status"] != "offline" for gpu in m["gpus"]]
        yield from self._gpus(gpus)

    @staticmethod
    def _gpus(gpus: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
        labels = ["machine", "gpu"]
        mib = 1024 * 1024
        yield _gauge("chordline_gpu_memory_total_bytes", "GPU memory", labels,
                     [([m, str(g["index"])], g["memory_total_mb"] * mib) for m, g in gpus])
        yield _gauge("chordline_gpu_memory_used_bytes", "GPU memory in use", labels,
                     [([m, str(g["index"])], (g["memory_total_mb"] - g["memory_free_mb"]) * mib)
                      for m, g in gpus if g.get("memory_free_mb") is not None])
        yield _gauge("chordline_gpu_utilization_ratio", "GPU busy time, 0 to 1", labels,
                     [([m, str(g["index"])], g["utilization"] / 100) for m, g in gpus
                      if g.get("utilization") is not None])


def _buckets(hist: StoredHistogram) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else repr(float(bound)), n)
            for bound, n in hist.cumulative()]


Samples = list[tuple[list[str], float]]


def _family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str,
            help_text: str, labels: list[str], samples: Samples) -> Metric:
    family = kind(name, help_text, labels=labels)
    for values, n in samples:
        family.add_metric(values, n)
    return family


def _counter(name: str, help_text: str, labels: list[str], samples: Samples) -> Metric:
    return _family(CounterMetricFamily, name, help_text, labels, samples)


def _gauge(name: str, help_text: str, labels: list[str], samples: Samples) -> Metric:
    return _family(GaugeMetricFamily, name, help_text, labels, samples)
