"""Real generation: tiny random-weight diffusers models from a catalog, through the real API
and a real GPU worker (declared; diffusers runs on the CPU here)."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image

from app import create_app
from app.embedded_redis import RedisServer
from tasks.core import keys
from tasks.core.events import EventType
from tests import tiny_models
from tests.support import (
    Api,
    EventTap,
    LiveServer,
    NodeProcess,
    fresh_database,
    overrides_from_env,
    settings_env,
    wait_for,
)

pytestmark = pytest.mark.slow
pytest.importorskip("diffusers", reason="the diffusion extra is not installed")


@dataclass
class Studio:
    app: Flask
    api: Api
    node: NodeProcess
    log: Path

    @property
    def redis(self) -> Any:
        return self.app.extensions["chordline"].redis

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self.api.request("GET", f"/api/jobs/{job_id}/events").json()["events"]

    def image(self, job: dict[str, Any], index: int = 0) -> Image.Image:
        response = self.api.request("GET", job["result"]["artifacts"][index]["url"])
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
        return Image.open(io.BytesIO(response.content))


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory,
           redis_server: RedisServer) -> Iterator[Studio]:
    """One node with a 24 GB GPU and a catalog: a tiny Stable Diffusion (the default for
    text-to-image and image-to-image), a ControlNet for it, a x4 upscaler, and a broken
    entry; the node also loads a plugin that can run its pipeline out of memory."""
    models = tmp_path_factory.mktemp("models")
    broken = models / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{truncated")
    rotten = tiny_models.stable_diffusion(models / "rotten")  # looks fine; its weights are not
    for weights in rotten.glob("unet/*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    catalog = tiny_models.catalog(models / "catalog.json", {
        "tiny-sd": {"path": str(tiny_models.stable_diffusion(models / "sd")), "vram_gb": 2,
                    "types": ["text-to-image", "image-to-image"], "default": True},
        "tiny-canny": {"path": str(tiny_models.controlnet(models / "canny")), "vram_gb": 1,
                       "types": ["controlnet"], "base": "tiny-sd"},
        "tiny-x4": {"path": str(tiny_models.upscaler(models / "x4")), "vram_gb": 1,
                    "types": ["upscale"]},
        "broken": {"path": str(broken), "types": ["text-to-image"]},
        "rotten": {"path": str(rotten), "types": ["text-to-image"], "vram_gb": 2},
    })
    env = settings_env(fresh_database(redis_server.url), tmp_path_factory.mktemp("artifacts"))
    app = create_app(overrides_from_env(env))
    server = LiveServer(app).start()
    logs = tmp_path_factory.mktemp("studio")
    node = NodeProcess({**env, "CHORDLINE_GPUS": "TestGPU:24", "CHORDLINE_MODELS": catalog,
                        "CHORDLINE_HANDLER_MODULES": "tests.workers.faulty_diffusion"},
                       logs / "node.log", "studio").start()
    try:
        yield Studio(app, Api(server.url, "key-tenant-a"), node, logs / "node.log")
    finally:
        node.stop()
        server.stop()
        app.extensions["event_hub"].stop()


def text_to_image(prompt: str = "a red fox in snow", **parameters: Any) -> dict[str, Any]:
    return {"type": "text-to-image", "prompt": prompt,
            "parameters": {"width": 96, "height": 64, "steps": 6, "seed": 7, **parameters}}


def test_text_to_image_runs_the_catalogs_default_model_with_a_report_per_step(
        studio: Studio) -> None:
    api = studio.api
    tap = EventTap(studio.redis)
    try:
        job = api.wait(api.submit_ok(text_to_image()), timeout=90)
    finally:
        tap.close()
    assert job["status"] == "completed", job
    result = job["result"]
    assert (result["backend"], result["model"], result["seed"], result["steps"]) == (
        "diffusers", "tiny-sd", 7, 6)
    assert (result["width"], result["height"], result["guidance_scale"]) == (96, 64, 7.5)
    assert set(result["timings"]) == {"queue_wait_ms", "model_load_ms", "inference_ms"}
    assert studio.image(job).size == (96, 64)
    assert job["machine_id"] == "studio" and job["requirements"]["model"] == "tiny-sd"
    progress = [e["data"]["progress"] for e in tap.events
                if e["type"] == EventType.JOB_PROGRESS and e["job_id"] == job["id"]]
    assert progress == [int(100 * (step + 1) / 6) for step in range(6)]
    # Once it is finished, its history keeps the last of them.
    assert [e["data"]["progress"] for e in studio.events(job["id"])
            if e["type"] == EventType.JOB_PROGRESS] == [100]


def test_the_same_seed_gives_the_same_image_and_the_model_stays_warm(studio: Studio) -> None:
    api = studio.api
    api.wait(api.submit_ok(text_to_image(seed=1)), timeout=90)  # the model is loaded now
    first, again, other = (api.wait(api.submit_ok(text_to_image(seed=seed)), timeout=60)
                           for seed in (11, 11, 12))
    assert studio.image(first).tobytes() == studio.image(again).tobytes()
    assert studio.image(first).tobytes() != studio.image(other).tobytes()
    # loaded once: the jobs after it find it warm on the GPU
    assert [j["result"]["timings"]["model_load_ms"] for j in (first, again, other)] == [0, 0, 0]
    machine = Api(api.base_url, "key-operator").request("GET", "/api/machines/studio").json()[
        "machine"]
    assert "tiny-sd" in machine["gpus"][0]["models_loaded"]


def test_image_to_image_controlnet_and_upscale_run_their_models(studio: Studio) -> None:
    api = studio.api
    source = Image.new("RGB", (96, 64), (30, 120, 200))
    for x in range(10, 80):
        source.putpixel((x, 32), (255, 255, 255))
    upload = api.request("POST", "/api/artifacts", files={"file": ("in.png", _png(source))})
    url = upload.json()["artifact"]["url"]
    repainted = api.wait(api.submit_ok({"type": "image-to-image", "prompt": "a cat", "parameters": {
        "image_url": url, "strength": 0.5, "steps": 6, "seed": 3}}), timeout=60)
    controlled = api.wait(api.submit_ok({"type": "controlnet", "prompt": "a lighthouse",
                                         "parameters": {"image_url": url, "steps": 4, "seed": 3,
                                                        "model": "tiny-canny"}}), timeout=60)
    upscaled = api.wait(api.submit_ok({"type": "upscale", "parameters": {
        "image_url": url, "scale_factor": 2, "steps": 3}}), timeout=60)
    for job, size in ((repainted, (96, 64)), (controlled, (96, 64)), (upscaled, (192, 128))):
        assert job["status"] == "completed", job
        assert job["result"]["backend"] == "diffusers"
        assert studio.image(job).size == size
    assert repainted["result"]["strength"] == 0.5
    assert (controlled["result"]["model"], controlled["result"]["base"]) == ("tiny-canny",
                                                                            "tiny-sd")
    assert upscaled["result"]["model"] == "tiny-x4", "the fleet's upscaler, not Lanczos"
    assert controlled["requirements"]["gpu_memory"] == 3, "the ControlNet's GB with its base's"


def test_terminate_stops_a_run_within_a_step_and_saves_nothing(studio: Studio) -> None:
    api = studio.api
    job_id = api.submit_ok(text_to_image(steps=150, width=128, height=128))
    wait_for(lambda: api.job(job_id)["progress"] >= 5, 60, message="the run to be under way")
    cancelled_at = time.monotonic()
    cancelled = api.request("POST", f"/api/jobs/{job_id}/cancel", json={"terminate": True})
    assert cancelled.status_code == 200
    wait_for(lambda: _run_ended(studio.log, job_id), 30, interval=0.02, message="the run to stop")
    # 150 steps take seconds here; it stopped at the next step's report instead
    assert time.monotonic() - cancelled_at < 1.5
    job = api.job(job_id)
    assert job["status"] == "cancelled" and job["result"] is None
    assert studio.redis.scard(keys.job_artifacts(job_id)) == 0
    events = studio.events(job_id)
    types = [e["type"] for e in events]
    after = types[types.index(EventType.JOB_CANCELLED) + 1:]
    assert EventType.JOB_COMPLETED not in types and after == [], "nothing after the cancel"
    last_step = max(e["data"]["progress"] for e in events if e["type"] == EventType.JOB_PROGRESS)
    assert last_step < 100, "stopped at a step, not at the end"


def test_a_broken_catalog_entry_is_reported_and_the_rest_still_runs(studio: Studio) -> None:
    operator = Api(studio.api.base_url, "key-operator")
    machine = operator.request("GET", "/api/machines/studio").json()["machine"]
    assert "broken/model_index.json is not valid JSON" in machine["models_unavailable"]["broken"]
    assert {"tiny-sd", "tiny-canny", "tiny-x4"} <= set(machine["models_available"])
    refused = studio.api.submit(text_to_image(model="broken"))
    assert refused.status_code == 400
    assert "unknown model broken for text-to-image jobs" in refused.json()["error"]["message"]
    assert "model broken is unavailable on this node" in studio.log.read_text()


def test_a_model_that_fails_to_load_is_withdrawn_from_the_node(studio: Studio) -> None:
    # Given a catalog model whose directory looked right but whose weights are cut short
    api, operator = studio.api, Api(studio.api.base_url, "key-operator")
    job_id = api.submit_ok({**text_to_image(model="rotten"), "retries": 1})
    # Then its first run fails to load it, the node withdraws it with the reason, and the
    # retry waits for a machine that has it rather than failing the same way
    wait_for(lambda: "rotten" in operator.request("GET", "/api/machines/studio").json()[
        "machine"]["models_unavailable"], 30, message="the model to be withdrawn")
    machine = operator.request("GET", "/api/machines/studio").json()["machine"]
    assert "does not load on this node" in machine["models_unavailable"]["rotten"]
    assert "rotten" not in machine["models_available"]
    job = wait_for(lambda: (j := api.job(job_id))["waiting_reason"] and j, 30,
                   message="the retry to wait for a machine")
    assert job["status"] == "pending" and "has model rotten" in job["waiting_reason"]
    retry = next(e for e in studio.events(job_id) if e["type"] == EventType.JOB_RETRYING)
    assert retry["data"]["error"]["code"] == "MODEL_UNAVAILABLE"
    api.request("POST", f"/api/jobs/{job_id}/cancel")
    # and the node goes on with its other models
    assert api.wait(api.submit_ok(text_to_image(seed=9)), timeout=60)["status"] == "completed"


def test_out_of_memory_is_retried_then_fails_and_the_node_recovers(studio: Studio) -> None:
    # Given a job whose pipeline runs out of GPU memory every time, with one retry
    api = studio.api
    job_id = api.submit_ok({**text_to_image("run out of memory"), "retries": 1})
    # Then it is retried once and fails with the stable code
    job = api.wait(job_id, timeout=60)
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["error"]["code"] == "GPU_OUT_OF_MEMORY"
    retry = next(e for e in studio.events(job_id) if e["type"] == EventType.JOB_RETRYING)
    assert retry["data"]["error"]["code"] == "GPU_OUT_OF_MEMORY"
    # and the pool process whose memory did not come back was replaced after it
    wait_for(lambda: "replacing pool process" in studio.log.read_text(), 10,
             message="the pool process to be replaced")
    # And the next job on that node succeeds, in a fresh process
    after = api.wait(api.submit_ok(text_to_image(seed=5)), timeout=90)
    assert after["status"] == "completed"
    assert after["result"]["timings"]["model_load_ms"] > 0, "a fresh process loads again"


def _run_ended(log: Path, job_id: str) -> bool:
    return bool(re.search(rf"job {job_id} lost its lease", log.read_text()))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()

