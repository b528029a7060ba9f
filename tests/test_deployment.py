"""The Procfile, as a platform runs it, and the docker files that mirror it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from app.client import ChordlineClient
from app.devstack import read_procfile
from app.embedded_redis import TUNING
from tasks.core.events import EventType
from tests.support import ROOT, WebProcess, WorkerProcess, kept, wait_for


def test_the_procfile_names_web_worker_and_flower() -> None:
    processes = read_procfile(ROOT / "Procfile")
    assert set(processes) == {"web", "worker", "flower"}
    assert processes["web"].startswith("gunicorn ")
    # Celery's task events cost a worker three PUBLISHes a job that nothing of ours reads;
    # Flower turns them on while it runs.
    assert "--events" not in processes["worker"]


def test_compose_runs_the_procfile_processes_beside_a_durable_redis() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    procfile = read_procfile(ROOT / "Procfile")
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "noeviction" in redis_command
    # The same tuning as the embedded Redis of `make run` and the tests (README: sizing).
    assert all(f"--{name} {value}" in redis_command for name, value in TUNING.items())
    # A password, and Redis published on no port of the host
    assert "requirepass" in redis_command and "ports" not in services["redis"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(procfile)
    for name, service in services.items():
        if name not in built:
            # Redis and the monitoring stack run stock images, not the Procfile.
            assert "image" in service and "chordline.procfile" not in service.get("labels", {})
            continue
        assert service["labels"]["chordline.procfile"] == name
        command = service["command"][-1]
        assert procfile[name].split()[0] in command
        assert service["environment"]["REDIS_URL"] == \
            "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
    assert (ROOT / "docker" / "Dockerfile").read_text().count("COPY") >= 4


# What GET /metrics serves: the only names the dashboard and the rules may use.
METRICS = {
    "chordline_jobs_submitted_total": "counter",
    "chordline_jobs_completed_total": "counter",
    "chordline_jobs_failed_total": "counter",
    "chordline_jobs_cancelled_total": "counter",
    "chordline_jobs": "gauge",
    "chordline_job_run_seconds": "histogram",
    "chordline_job_queue_wait_seconds": "histogram",
    "chordline_queue_depth": "gauge",
    "chordline_queue_oldest_wait_seconds": "gauge",
    "chordline_celery_queue_length": "gauge",
    "chordline_celery_tasks_total": "counter",
    "chordline_celery_worker_up": "gauge",
    "chordline_celery_worker_tasks_active": "gauge",
    "chordline_workflows_submitted_total": "counter",
    "chordline_workflows_finished_total": "counter",
    "chordline_compensations_total": "counter",
    "chordline_events_published_total": "counter",
    "chordline_websocket_connections": "gauge",
    "chordline_http_requests_total": "counter",
    "chordline_http_request_duration_seconds": "histogram",
    "chordline_machines": "gauge",
    "chordline_webhook_backlog": "gauge",
    "chordline_webhook_overdue_seconds": "gauge",
    "chordline_gpu_memory_used_bytes": "gauge",
    "chordline_gpu_memory_total_bytes": "gauge",
    "chordline_gpu_utilization_ratio": "gauge",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DOCKER = ROOT / "docker"


def _metric_names(expr: str) -> set[str]:
    """The chordline_ series an expression selects (recording rules are chordline:...)."""
    return set(re.findall(r"(?<![\w:])chordline_[a-z0-9_]+", expr))


def _check_metric_names(exprs: list[str]) -> set[str]:
    used: set[str] = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        for name in _metric_names(expr):
            base = name
            for suffix in HISTOGRAM_SERIES:
                if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
                    base = name[: -len(suffix)]
                    assert METRICS[base] == "histogram", f"{name} in {expr}"
                    break
            assert base in METRICS, f"{name} is not served by /metrics: {expr}"
            if METRICS[base] == "histogram":
                assert name != base, f"histogram {name} queried without a series suffix"
            if METRICS[base] == "counter":
                assert re.search(rf"(rate|increase)\({name}\b", expr), f"raw counter {name}"
            used.add(base)
    return used


def _load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_prometheus_scrapes_web_with_a_bearer_key_file() -> None:
    config = _load_yaml(DOCKER / "prometheus" / "prometheus.yml")
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "chordline"]
    assert job["metrics_path"] == "/metrics" and job["scrape_interval"] == "15s"
    assert job["static_configs"] == [{"targets": ["web:8000"]}]
    assert job["authorization"] == {"type": "Bearer",
                                    "credentials_file": "/etc/prometheus/chordline_key"}
    assert config["rule_files"] == ["rules.yml"]
    # The key file itself is the operator's, never the repository's.
    assert "chordline_key" in (DOCKER / "prometheus" / ".gitignore").read_text().split()


def test_the_rules_use_only_metrics_that_the_api_serves() -> None:
    rules = _load_yaml(DOCKER / "prometheus" / "rules.yml")
    exprs, alerts, records = [], set(), set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
            exprs.append(str(rule["expr"]))
            if "alert" in rule:
                alerts.add(rule["alert"])
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert rule["annotations"]["summary"]
            else:
                assert re.fullmatch(r"chordline:[a-z0-9_]+:[a-z0-9_]+", rule["record"])
                records.add(rule["record"])
    _check_metric_names(exprs)
    for expr in exprs:  # every recording rule used is defined here
        assert set(re.findall(r"chordline:[a-z0-9_:]+", expr)) <= records, expr
    assert {"ChordlineJobFailureRatioHigh", "ChordlineQueueOldestWaitHigh",
            "ChordlineNoMachineOnline", "ChordlineGpuMemoryNearlyFull"} <= alerts


def test_the_grafana_dashboard_charts_only_metrics_that_the_api_serves() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "chordline.json").read_text())
    assert dashboard["uid"] == "chordline" and dashboard["title"] == "Chordline"
    assert 36 <= dashboard["schemaVersion"] <= 41
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            exprs.append(target["expr"])
    used = _check_metric_names(exprs)
    # Every metric the API serves is on the dashboard.
    assert used == set(METRICS)
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert any("chordline_job_run_seconds_bucket" in e and "by (le, type)" in e for e in quantiles)
    assert any("chordline_job_queue_wait_seconds_bucket" in e for e in quantiles)


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboard() -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    [source] = _load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = _load_yaml(provisioning / "dashboards" / "chordline.yml")["providers"]
    compose = _load_yaml(DOCKER / "compose.yaml")
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1)
                  for volume in compose["services"]["grafana"]["volumes"]
                  if volume.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]


def _host_ips(service: dict) -> list[str]:
    """The host address each published port binds ("" for every interface)."""
    ips = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ips.append(port.get("host_ip", ""))
        else:
            parts = str(port).split(":")
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def test_flower_and_monitoring_are_opt_in_and_local_only() -> None:
    compose = _load_yaml(DOCKER / "compose.yaml")
    services = compose["services"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"redis", "web", "worker"}

    flower = services["flower"]
    assert flower["profiles"] == ["flower"]
    assert _host_ips(flower) and set(_host_ips(flower)) == {"127.0.0.1"}
    command = flower["command"][-1]
    assert '--basic-auth="$${FLOWER_BASIC_AUTH:?' in command
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    # The merge kept the shared environment.
    assert flower["environment"]["REDIS_URL"] == services["web"]["environment"]["REDIS_URL"]

    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        assert set(_host_ips(services[name])) <= {"127.0.0.1"}, name
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert "$${GRAFANA_ADMIN_PASSWORD:?" in services["grafana"]["entrypoint"][-1]
    [secret] = services["prometheus"]["secrets"]
    assert secret["target"] == "/etc/prometheus/chordline_key"
    assert secret["source"] in compose["secrets"]

    # Compose interpolates every service, active profile or not: a compose-level
    # `${VAR:?}` may only name what the default services need too.
    text = "\n".join(line for line in (DOCKER / "compose.yaml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    required = set(re.findall(r"(?<!\$)\$\{(\w+):\?", text))
    assert required == {"CHORDLINE_API_KEYS", "REDIS_PASSWORD"}

@pytest.fixture
def web_process(stack_env: dict[str, str], worker: WorkerProcess,
                tmp_path: Path) -> Iterator[str]:
    """The `web` line of the Procfile, started by a shell exactly as a platform would."""
    process = WebProcess(stack_env, tmp_path / "web.log").start()
    yield process.url
    process.stop()


def test_the_web_process_serves_a_job_end_to_end(web_process: str) -> None:
    headers = {"x-api-key": "key-tenant-a"}
    response = requests.post(f"{web_process}/api/jobs/submit", headers=headers, timeout=10,
                             json={"type": "text-to-image", "prompt": "gunicorn",
                                   "parameters": {"width": 64, "height": 64}})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]

    def done() -> dict | None:
        job = requests.get(f"{web_process}/api/jobs/{job_id}/status", headers=headers,
                           timeout=10).json()["job"]
        return job if job["status"] in {"completed", "failed"} else None

    job = wait_for(done, 30, interval=0.1)
    assert job["status"] == "completed"
    image = requests.get(web_process + job["result"]["artifacts"][0]["url"], headers=headers,
                         timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_the_web_process_streams_events_over_websocket(web_process: str) -> None:
    """gunicorn's gevent worker: the hub's pub/sub and every socket are greenlets."""
    client = ChordlineClient(web_process, "key-tenant-a")
    kind, job_id = client.submit({"type": "sleep", "parameters": {"seconds": 0.5}})
    events = list(client.watch(kind, job_id))
    assert events[0]["type"] == EventType.JOB_QUEUED
    assert events[-1]["type"] == EventType.JOB_COMPLETED
    assert kept(events) == client.events(kind, job_id)
