"""GET /metrics: Prometheus' text format, moved by real jobs, summed across gunicorn workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tasks.jobs.message import RUN_JOB
from tests.support import Api, LiveServer, Socket, WebProcess, WorkerProcess, wait_for

OPERATOR = {"authorization": "Bearer key-operator"}
# Labels whose values could grow without bound, or carry a tenant's text.
UNBOUNDED = {"job_id", "workflow_id", "tenant", "prompt", "correlation_id", "id"}


def scrape(url: str, headers: dict[str, str] = OPERATOR) -> dict[tuple[str, tuple], float]:
    """Every sample, by name and sorted labels."""
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_only_an_operator_or_a_viewer_may_scrape(live_server: LiveServer) -> None:
    url = f"{live_server.url}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    tenant = requests.get(url, headers={"x-api-key": "key-tenant-a"}, timeout=5)
    assert (tenant.status_code, tenant.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert requests.get(url, headers={"authorization": "Bearer key-viewer"},
                        timeout=5).status_code == 200


def test_the_exposition_parses_and_follows_the_naming_practice(live_server: LiveServer,
                                                                 api: Api) -> None:
    api.wait(api.submit_ok({"type": "echo", "parameters": {"value": 1}}))
    response = requests.get(f"{live_server.url}/metrics", headers=OPERATOR, timeout=10)
    families = list(text_string_to_metric_families(response.text))
    ours = {f.name: f for f in families}
    for name in ("chordline_jobs_submitted", "chordline_jobs_completed", "chordline_jobs_failed",
                 "chordline_job_run_seconds", "chordline_job_queue_wait_seconds",
                 "chordline_queue_depth", "chordline_workflows_finished",
                 "chordline_compensations", "chordline_events_published",
                 "chordline_websocket_connections", "chordline_machines",
                 "chordline_celery_tasks", "chordline_http_requests"):
        assert name in ours, name
    for family in families:
        assert family.name.startswith("chordline_"), family.name
        for sample in family.samples:
            assert not UNBOUNDED & set(sample.labels), (sample.name, sample.labels)
            if family.type == "counter" and sample.name.endswith(("_total", "_created")):
                continue
            assert family.type != "counter", sample.name
    assert ours["chordline_job_run_seconds"].type == "histogram"


def test_counters_move_with_real_jobs(live_server: LiveServer, api: Api) -> None:
    # Given the counts before
    before = scrape(live_server.url)
    # When three jobs complete and one fails
    done = [api.submit_ok({"type": "echo", "parameters": {"value": i}}) for i in range(3)]
    failed = api.submit_ok({"type": "fail", "retries": 0})
    for job_id in (*done, failed):
        api.wait(job_id)

    # Then each counter moved by exactly that, in the same scrape as the histograms
    def ran(samples: dict[tuple[str, tuple], float]) -> float:
        return sum(value(samples, "chordline_celery_tasks_total", task=RUN_JOB, state=state)
                   for state in ("succeeded", "failed"))

    def moved() -> dict[tuple[str, tuple], float]:
        after = scrape(live_server.url)
        return after if ran(after) - ran(before) >= 4 else {}

    after = wait_for(moved, 10, message="the workers' task counts to reach Redis")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("chordline_jobs_submitted_total", type="echo") == 3
    assert delta("chordline_jobs_completed_total", type="echo") == 3
    assert delta("chordline_jobs_failed_total", type="fail") == 1
    assert delta("chordline_job_run_seconds_count", type="echo") == 3
    assert delta("chordline_job_run_seconds_bucket", type="echo", le="+Inf") == 3
    assert delta("chordline_job_queue_wait_seconds_count", type="fail") == 1
    assert delta("chordline_events_published_total", type="job.completed") >= 3
    assert value(after, "chordline_machines", status="online") >= 1
    assert value(after, "chordline_jobs", status="completed") >= 3


@pytest.fixture
def three_workers(stack_env: dict[str, str], worker: WorkerProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    process = WebProcess(stack_env, tmp_path_factory.mktemp("web") / "web.log",
                         workers=3).start()
    yield process
    process.stop()


def test_several_gunicorn_workers_sum_into_one_answer(three_workers: WebProcess) -> None:
    url = three_workers.url
    before = scrape(url)
    # Requests and sockets spread over three processes...
    for _ in range(30):
        assert requests.get(f"{url}/health", timeout=5).status_code in (200, 503)
    sockets = [Socket(url, "key-tenant-a") for _ in range(4)]
    try:
        # (a socket counts once its handler runs, a moment after the handshake)
        wait_for(lambda: value(scrape(url), "chordline_websocket_connections") == 4, 10,
                 message="the four sockets to count")
        # ...and whichever worker answers a scrape counts them all
        for _ in range(6):
            after = scrape(url)
            counted = sum(v - value(before, n, **dict(labels))
                          for (n, labels), v in after.items()
                          if n == "chordline_http_requests_total"
                          and dict(labels)["endpoint"] == "health.health")
            assert counted == 30
            assert value(after, "chordline_websocket_connections") == 4
    finally:
        for sock in sockets:
            sock.close()
    wait_for(lambda: value(scrape(url), "chordline_websocket_connections") == 0, 10,
             message="closed sockets to stop counting")
