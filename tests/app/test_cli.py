"""The `chordline` command and its client class, against the live API and a real worker."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.client import ChordlineClient
from app.client.cli import Line, ProgressView
from tasks.core.events import EventType
from tests.support import ROOT, Api, CuttableProxy, LiveServer, kept

WORKFLOW = {"name": "cli", "steps": [
    {"type": "echo", "parameters": {"value": 1}},
    {"type": "sleep", "parameters": {"seconds": 0.6}, "depends_on": [0]}]}


def chordline(live_server: LiveServer, *args: str, key: str = "key-tenant-a",
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHORDLINE_API_URL": live_server.url, "CHORDLINE_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "app.client.cli", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_submit_watch_follows_a_workflow_to_its_end(
        live_server: LiveServer, api: Api, tmp_path: Path) -> None:
    spec = tmp_path / "workflow.json"
    spec.write_text(json.dumps(WORKFLOW))
    done = chordline(live_server, "submit", str(spec), "--watch")
    assert done.returncode == 0, done.stderr
    first, *lines = done.stdout.splitlines()
    submitted = json.loads(first)
    assert submitted["kind"] == "workflow"
    # One line per event (not a terminal), ending with the workflow's completion. The
    # history is what was watched, less the progress a finished step no longer keeps.
    history = api.request("GET", f"/api/workflows/{submitted['id']}/events").json()["events"]
    watched = [line.split()[1] for line in lines]
    told = [e["type"] for e in history]
    assert [t for t in watched if t != EventType.JOB_PROGRESS] == \
        [t for t in told if t != EventType.JOB_PROGRESS]
    assert 1 <= told.count(EventType.JOB_PROGRESS) <= watched.count(EventType.JOB_PROGRESS)
    assert lines[-1].split()[1] == EventType.WORKFLOW_COMPLETED
    assert any(line.split()[1] == EventType.JOB_PROGRESS and line.endswith("%") for line in lines)


def test_submit_a_yaml_job_then_read_its_status(
        live_server: LiveServer, api: Api, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("type: echo\nparameters:\n  value: hello\n")
    submitted = chordline(live_server, "submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    api.wait(job_id)
    status = chordline(live_server, "status", job_id)
    assert json.loads(status.stdout)["job"]["result"] == {"value": "hello"}


def test_cancel_a_workflow_and_watch_says_it_did_not_complete(
        live_server: LiveServer, api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "long", "steps": [
        {"type": "sleep", "parameters": {"seconds": 5}},
        {"type": "echo", "parameters": {"value": 1}, "depends_on": [0]}]})
    cancelled = chordline(live_server, "cancel", workflow_id, "--reason", "changed my mind")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    watched = chordline(live_server, "watch", workflow_id)
    assert watched.returncode == 1
    assert watched.stdout.splitlines()[-1].split()[1] == EventType.WORKFLOW_CANCELLED


def test_cancel_with_compensate_then_compensate_again_is_refused(
        live_server: LiveServer, api: Api) -> None:
    workflow_id, _ = api.create_workflow({"name": "undo", "steps": [
        {"type": "echo", "parameters": {"value": 1}},
        {"type": "sleep", "parameters": {"seconds": 30}, "depends_on": [0]}]})
    api.wait(api.workflow(workflow_id)["steps"][0]["job_id"])
    cancelled = chordline(live_server, "cancel", workflow_id, "--compensate")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "compensating its completed steps" in cancelled.stdout
    watched = chordline(live_server, "watch", workflow_id)
    assert watched.returncode == 1
    assert watched.stdout.splitlines()[-1].split()[1] == EventType.WORKFLOW_COMPENSATED
    again = chordline(live_server, "compensate", workflow_id)
    assert again.returncode == 1
    assert "WORKFLOW_NOT_COMPENSABLE" in again.stderr


@pytest.mark.parametrize("content, name, message", [
    ("{not json", "bad.json", "not valid JSON"),
    ("a: [", "bad.yaml", "not valid YAML"),
    ("[1, 2]", "list.json", "expected an object"),
])
def test_a_bad_file_is_a_usage_error(live_server: LiveServer, tmp_path: Path,
                                     content: str, name: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = chordline(live_server, "submit", str(path))
    assert result.returncode == 2 and message in result.stderr


def test_api_errors_print_their_code(live_server: LiveServer) -> None:
    result = chordline(live_server, "status", "nope", key="wrong-key-123")
    assert result.returncode == 1 and "UNAUTHORIZED" in result.stderr
    result = chordline(live_server, "submit", "-", stdin='{"type": "no-such-type"}')
    assert result.returncode == 1 and "JOB_SUBMISSION_FAILED" in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_resumes_after_a_dropped_connection_and_misses_nothing(
        live_server: LiveServer, api: Api) -> None:
    proxy = CuttableProxy(live_server.url)
    try:
        client = ChordlineClient(proxy.url, "key-tenant-a")
        workflow_id, _ = api.create_workflow({"name": "drops", "steps": [
            {"type": "sleep", "parameters": {"seconds": 0.5}},
            {"type": "sleep", "parameters": {"seconds": 0.5}, "depends_on": [0]},
            {"type": "echo", "parameters": {"value": 1}, "depends_on": [1]}]})
        seen: list[dict[str, Any]] = []
        for event in client.watch("workflow", workflow_id, reconnect_delay=0.2):
            seen.append(event)
            if len(seen) in (3, 8):
                proxy.cut()  # the network drops under the socket
        history = api.request("GET", f"/api/workflows/{workflow_id}/events").json()["events"]
        assert kept(seen) == history
    finally:
        proxy.close()


def test_progress_bars_redraw_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    view = ProgressView({"j1": Line("step 0 sleep")}, out)
    view.update({"type": EventType.JOB_STARTED, "job_id": "j1", "ts": "t", "data": {}})
    view.update({"type": EventType.JOB_PROGRESS, "job_id": "j1", "ts": "t",
                 "data": {"progress": 50}})
    drawn = out.getvalue()
    assert "\x1b[2F" in drawn, "the second draw moves back over the two rows of the first"
    last_draw = drawn.rsplit("\x1b[2F", 1)[1]
    assert last_draw == ("\x1b[2K[############............]  50% running    step 0 sleep\n"
                         "\x1b[2K\n")
