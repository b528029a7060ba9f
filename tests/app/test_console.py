"""The operator console in a real Chromium, against gunicorn, Redis and a Celery worker.

Chromium is Debian's (`/usr/bin/chromium`, or CHROMIUM_PATH), driven by Playwright;
where there is none these tests are skipped with the command that installs it.
Every page fails its test on a JavaScript error, and each test leaves a screenshot
of what it saw under the session's temporary directory (`SCREENSHOTS=dir` keeps
them somewhere else: the README's come from here).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tasks.services import Services
from tests.support import Api, NodeProcess, WebProcess, WorkerProcess, wait_for, write_catalog

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("no Chromium at /usr/bin/chromium: `apt-get install -y chromium` "
                "(.ci/run does) to run the console's browser tests", allow_module_level=True)

pytestmark = pytest.mark.slow
OPERATOR, VIEWER, TENANT = "key-operator", "key-viewer", "key-tenant-a"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def web(stack_env: dict[str, str], worker: WorkerProcess,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """gunicorn with two workers: a session cookie and a socket may land on either."""
    process = WebProcess(stack_env, tmp_path_factory.mktemp("web") / "web.log", workers=2).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screens")


@pytest.fixture
def console(browser: Any, web: WebProcess, shots: Path,
            request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies); the test fails on any JavaScript error."""
    context = browser.new_context(base_url=web.url, viewport={"width": 1360, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors count; the browser's own notes on refused requests and dropped
    # sockets do not (tests provoke both on purpose, and assert on them).
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not any(
        note in m.text for note in ("Failed to load resource", "WebSocket")) else None)
    yield page
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def sign_in(page: Any, key: str, path: str = "/dashboard/") -> None:
    page.goto(path)
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#live[data-state=live]")


def api(web: WebProcess, key: str = TENANT) -> Api:
    return Api(web.url, key)


def forged(page: Any, path: str, *, with_token: bool) -> dict[str, Any]:
    """A POST from the page's own script, as a crafted request would send it."""
    result: dict[str, Any] = page.evaluate(
        """async ([path, withToken]) => {
             const token = document.querySelector('meta[name="csrf-token"]').content;
             const r = await fetch(path, {method: 'POST', headers: withToken ?
               {'x-csrf-token': token, 'content-type': 'application/json'} : {}});
             return {status: r.status, body: await r.json()};
           }""", [path, with_token])
    return result


def unschedulable_job(web: WebProcess) -> str:
    """A job no machine can take (a label no node has): it waits, pending."""
    return api(web).submit_ok({"type": "text-to-image", "prompt": "waits",
                               "requirements": {"labels": {"zone": "nowhere"}}})


def test_an_operator_signs_in_and_out_and_a_tenant_cannot(console: Any, web: WebProcess) -> None:
    # A page asks for a sign-in first
    console.goto("/dashboard/machines")
    assert "/dashboard/login" in console.url
    # A tenant's key and an unknown key are refused
    console.fill("#key", TENANT)
    console.click("button[type=submit]")
    assert "cannot sign in" in console.inner_text(".error")
    console.fill("#key", "not-a-key-at-all")
    console.click("button[type=submit]")
    assert "not known" in console.inner_text(".error")
    # An operator's key opens the page first asked for, with a strict HttpOnly cookie
    console.fill("#key", OPERATOR)
    console.click("button[type=submit]")
    console.wait_for_selector("h1:has-text('Machines')")
    cookie, = console.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert OPERATOR not in cookie["value"] and OPERATOR not in console.url
    # Signing out ends the session: the old cookie no longer opens anything
    console.click("#sign-out")
    console.wait_for_url("**/dashboard/login")
    stale = requests.get(f"{web.url}/api/overview", timeout=5,
                         cookies={cookie["name"]: cookie["value"]})
    assert stale.status_code == 401
    console.goto("/dashboard/")
    assert "/dashboard/login" in console.url


def test_a_viewer_sees_everything_but_no_action_and_a_forged_one_is_refused(
        console: Any, web: WebProcess) -> None:
    job_id = unschedulable_job(web)
    sign_in(console, VIEWER, f"/dashboard/jobs/{job_id}")
    assert console.inner_text("#job-status") == "pending"
    assert console.locator("[data-action], #cancel-job").count() == 0
    assert "read-only" in console.inner_text(".who")
    console.goto("/dashboard/machines")
    console.wait_for_selector("[data-machine]")
    assert console.locator("[data-action]").count() == 0
    # Even with the session's own token, a viewer's change is refused, and audited
    refused = forged(console, f"/api/jobs/{job_id}/cancel", with_token=True)
    assert (refused["status"], refused["body"]["error"]["code"]) == (403, "FORBIDDEN")
    assert api(web).job(job_id)["status"] == "pending"
    audit = api(web, OPERATOR).request("GET", "/api/audit").json()["entries"]
    assert audit[0]["action"] == "jobs.cancel" and audit[0]["outcome"] == "FORBIDDEN"
    assert audit[0]["who"].startswith("viewer:")
    api(web, OPERATOR).request("POST", f"/api/jobs/{job_id}/cancel", json={})


def test_an_operators_request_without_the_csrf_token_is_refused(console: Any,
                                                                web: WebProcess) -> None:
    job_id = unschedulable_job(web)
    sign_in(console, OPERATOR)
    refused = forged(console, f"/api/jobs/{job_id}/cancel", with_token=False)
    assert (refused["status"], refused["body"]["error"]["code"]) == (403, "CSRF_FAILED")
    cookie = {c["name"]: c["value"] for c in console.context.cookies()}
    cross_site = requests.post(f"{web.url}/api/jobs/{job_id}/cancel", cookies=cookie, timeout=5,
                               headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403
    assert api(web).job(job_id)["status"] == "pending"
    api(web, OPERATOR).request("POST", f"/api/jobs/{job_id}/cancel", json={})


def test_a_workflow_submitted_over_the_api_appears_and_completes_without_a_reload(
        console: Any, web: WebProcess) -> None:
    sign_in(console, OPERATOR, "/dashboard/workflows")
    console.evaluate("window.notReloaded = true")
    workflow_id, _ = api(web).create_workflow({"name": "live", "steps": [
        {"type": "sleep", "parameters": {"seconds": 0.4},
         "depends_on": [i - 1] if i else []} for i in range(3)]})
    row = f"tr[data-workflow='{workflow_id}']"
    console.wait_for_selector(f"{row} .badge.status-running")
    console.wait_for_selector(f"{row} .badge.status-completed")
    assert console.inner_text(f"{row} td:nth-child(5)") == "3 / 3"
    assert console.evaluate("window.notReloaded") is True


def test_a_failing_workflows_saga_is_shown_step_by_step(console: Any, web: WebProcess) -> None:
    workflow_id, _ = api(web).create_workflow({"name": "undo", "steps": [
        {"type": "echo", "parameters": {"value": "a"}},
        {"type": "echo", "parameters": {"value": "b"}, "depends_on": [0]},
        {"type": "fail", "depends_on": [1], "retries": 0}]})
    sign_in(console, OPERATOR, f"/dashboard/workflows/{workflow_id}")
    console.wait_for_selector("#workflow-status.status-compensated")
    saga = console.locator("#saga li").evaluate_all(
        "items => items.map(li => [li.dataset.event, li.dataset.step])")
    assert saga == [["workflow.compensating", ""], ["step.compensated", "1"],
                    ["step.compensated", "0"], ["workflow.compensated", ""]]
    assert "Step 2 failed" in console.inner_text("#saga li:first-child")
    nodes = console.locator("#dag [data-step]").evaluate_all(
        "gs => gs.map(g => [g.dataset.step, g.querySelector('.dag-status').textContent])")
    assert nodes == [["0", "compensated"], ["1", "compensated"], ["2", "failed"]]


def test_an_operator_drains_and_resumes_a_machine(console: Any, web: WebProcess) -> None:
    sign_in(console, OPERATOR, "/dashboard/machines")
    # An online machine (a test before this one in the same process may have left one
    # offline, which has no drain button)
    card = console.locator("[data-machine]:has([data-action=drain])").first
    machine_id = card.get_attribute("data-machine")
    card.locator("[data-action=drain]").click()
    console.wait_for_selector(f"[data-machine='{machine_id}'] .badge.status-draining")
    machine = api(web, OPERATOR).request("GET", f"/api/machines/{machine_id}").json()["machine"]
    assert machine["status"] == "draining"
    console.locator(f"[data-machine='{machine_id}'] [data-action=resume]").click()
    console.wait_for_selector(f"[data-machine='{machine_id}'] .badge.status-online")
    console.goto("/dashboard/audit")
    actions = console.locator("#audit tr td:nth-child(4)").all_inner_texts()
    assert actions[0].startswith("machines.resume") and actions[1].startswith("machines.drain")


def test_an_operator_cancels_a_job_from_its_page(console: Any, web: WebProcess) -> None:
    job_id = unschedulable_job(web)
    sign_in(console, OPERATOR, f"/dashboard/jobs/{job_id}")
    console.wait_for_selector("#timeline li[data-event='job.unschedulable']")
    console.click("#cancel-job")
    console.wait_for_selector("#job-status.status-cancelled")
    console.wait_for_selector("#timeline li[data-event='job.cancelled']")
    assert api(web).job(job_id)["status"] == "cancelled"


def test_a_completed_jobs_page_shows_where_it_ran_its_time_and_its_image(
        console: Any, web: WebProcess) -> None:
    client = api(web)
    job_id = client.submit_ok({"type": "text-to-image", "prompt": "a lighthouse at dusk",
                               "parameters": {"width": 256, "height": 256}})
    client.wait(job_id)
    sign_in(console, OPERATOR, f"/dashboard/jobs/{job_id}")
    assert console.inner_text("#job-status") == "completed"
    assert console.locator("#outputs img").evaluate("img => img.complete && img.naturalWidth") \
        == 256
    assert "—" not in console.inner_text(".timing dd:nth-of-type(1)")
    assert "—" not in console.inner_text(".timing dd:nth-of-type(3)")
    assert console.inner_text("#job-where") != "—"


def test_the_overview_and_events_pages_follow_the_fleet_live(console: Any,
                                                               web: WebProcess) -> None:
    sign_in(console, OPERATOR, "/dashboard/")
    before = int(console.inner_text("#hour-completed"))
    job_id = api(web).submit_ok({"type": "echo", "parameters": {"value": 1}})
    wait_for(lambda: int(console.inner_text("#hour-completed")) > before, 15,
             message="the overview to count the job")
    console.goto(f"/dashboard/events?job_id={job_id}")
    types = console.locator("#events tr").evaluate_all("rows => rows.map(r => r.dataset.event)")
    assert types[0] == "job.completed" and types[-1] == "job.queued"


def test_the_page_recovers_after_the_api_restarts(console: Any, web: WebProcess,
                                                  services: Services) -> None:
    job_id = unschedulable_job(web)
    sign_in(console, OPERATOR, f"/dashboard/jobs/{job_id}")
    # The API goes away: the page says it is reconnecting
    web.kill()  # a crash: no goodbye to the socket
    console.wait_for_selector("#live[data-state=reconnecting]")
    # While it is down, the job changes; when it is back the page catches up
    # from its last event id, with the same session, and without a reload
    console.evaluate("window.notReloaded = true")
    outcome, _ = services.store.cancel(job_id, "tenant-a", "cancelled while the API was down")
    web.start()
    console.wait_for_selector("#live[data-state=live]", timeout=20_000)
    console.wait_for_selector("#job-status.status-cancelled")
    assert outcome == "ok"
    assert console.evaluate("window.notReloaded") is True


@pytest.fixture
def gpu_node(stack_env: dict[str, str], tmp_path: Path) -> Iterator[NodeProcess]:
    """A node with two declared GPUs and a catalog of two (simulated) models."""
    env = {**stack_env, "CHORDLINE_GPUS": "A100:80,L4:24", "CHORDLINE_MACHINE_LABELS": "zone=eu",
           "CHORDLINE_MODELS": write_catalog(tmp_path / "models.json",
                                             {"sdxl-base": 10, "flux-dev": 24})}
    node = NodeProcess(env, tmp_path / "node.log", "gpu-node-1", workers=2).start()
    yield node
    node.stop()


def test_every_page_renders_live_without_a_script_error(console: Any, web: WebProcess,
                                                        gpu_node: NodeProcess,
                                                        shots: Path) -> None:
    """One screenshot per page (the README's, with SCREENSHOTS=docs/console)."""
    client = api(web)
    warm = client.submit_ok({"type": "simulate", "parameters": {
        "model": "sdxl-base", "seconds": 0.2, "load_seconds": 0.4, "vram_gb": 10}})
    client.wait(warm)
    workflow_id, (job_id, *_) = client.create_workflow({"name": "portrait-pipeline", "steps": [
        {"type": "text-to-image", "prompt": "a portrait in oil", "parameters": {"width": 256,
                                                                               "height": 256}},
        {"type": "upscale", "parameters": {"scale_factor": 2},
         "depends_on": [0]},
        {"type": "echo", "parameters": {"value": "notify"}, "depends_on": [0]},
        {"type": "echo", "parameters": {"value": "publish"}, "depends_on": [1, 2]}]})
    client.wait_workflow(workflow_id)
    sign_in(console, OPERATOR)
    shots.mkdir(parents=True, exist_ok=True)
    for name, path in (("overview", "/dashboard/"), ("machines", "/dashboard/machines"),
                       ("jobs", "/dashboard/jobs"), ("job", f"/dashboard/jobs/{job_id}"),
                       ("workflows", "/dashboard/workflows"),
                       ("workflow", f"/dashboard/workflows/{workflow_id}"),
                       ("events", "/dashboard/events"), ("audit", "/dashboard/audit"),
                       ("gpu-job", f"/dashboard/jobs/{warm}")):
        console.goto(path)
        if name != "audit":
            console.wait_for_selector("#live[data-state=live]")
        assert console.locator("h1").count() == 1
        console.screenshot(path=str(shots / f"{name}.png"))
    # The GPU node's page row: memory used of total, its load and the model it keeps warm
    console.goto("/dashboard/machines")
    ran_on = client.job(warm)
    gpu = console.locator(f"[data-gpu='gpu-node-1:{ran_on['gpu_index']}']")
    total_gb = {"A100": 80, "L4": 24}[ran_on["gpu_name"]]
    assert "sdxl-base" in gpu.inner_text() and f"/ {total_gb}.0 GB" in gpu.inner_text()
    console.goto(f"/dashboard/jobs/{warm}")
    assert "0.4" in console.inner_text(".timing dd:nth-of-type(2)")  # the model load
