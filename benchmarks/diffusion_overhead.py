"""Diffusion overhead: one text-to-image generation by calling the pipeline directly, and the
same job through Chordline (HTTP submit, queue, GPU worker, events over WebSocket).

Run with `make bench` (or `python -m benchmarks.diffusion_overhead`). It builds a small
random-weight Stable Diffusion (no download) sized so that one generation takes about a
second on this machine's CPU, starts its own Redis, the API on a real socket and one node
whose declared GPU runs the model, and times N jobs one after another each way, from the
submit to the `job.completed` event a WebSocket client receives. The difference is
Chordline's overhead per job; the goal is under 5 % of the pipeline's own time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from app import create_app
from app.client import ChordlineClient
from app.embedded_redis import RedisServer
from tests import tiny_models
from tests.support import LiveServer, NodeProcess, overrides_from_env, settings_env

PARAMETERS = {"width": 256, "height": 256, "guidance_scale": 7.5}


def direct(folder: Path, steps: int, runs: int) -> list[float]:
    """Seconds per generation, calling the pipeline in this process (after one warm-up)."""
    import torch
    from diffusers import AutoPipelineForText2Image

    pipeline = AutoPipelineForText2Image.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    times = []
    for seed in range(runs + 1):
        started = time.perf_counter()
        pipeline("a red fox in snow", num_inference_steps=steps,
                 generator=torch.Generator().manual_seed(seed), **PARAMETERS)
        times.append(time.perf_counter() - started)
    return times[1:]


def through_chordline(client: ChordlineClient, steps: int,
                      runs: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Seconds from submit to the completed event, per job (after one warm-up job that
    loads the model), and each job's own timings."""
    times, timings = [], []
    for seed in range(runs + 1):
        started = time.perf_counter()
        kind, job_id = client.submit({"type": "text-to-image", "prompt": "a red fox in snow",
                                      "parameters": {**PARAMETERS, "steps": steps,
                                                     "seed": seed}})
        last = list(client.watch(kind, job_id))[-1]
        assert last["type"] == "job.completed", last
        times.append(time.perf_counter() - started)
        timings.append(last["data"]["result"]["timings"])
    return times[1:], timings[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--scale", type=int, default=4, help="width of the random UNet")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = tiny_models.stable_diffusion(root / "sd", scale=args.scale)
        catalog = tiny_models.catalog(root / "models.json", {"bench-sd": {
            "path": str(model), "types": ["text-to-image"], "vram_gb": 2}})
        server = RedisServer(root / "redis").start()
        env = settings_env(server.url, root / "artifacts", CHORDLINE_LOG_LEVEL="WARNING")
        app = create_app(overrides_from_env(env))
        web = LiveServer(app).start()
        node = NodeProcess({**env, "CHORDLINE_GPUS": "BenchGPU:24", "CHORDLINE_MODELS": catalog},
                           root / "node.log", "bench").start()
        try:
            ours, timings = through_chordline(ChordlineClient(web.url, "key-tenant-a"),
                                              args.steps, args.runs)
            bare = direct(model, args.steps, args.runs)
        finally:
            node.stop()
            web.stop()
            app.extensions["event_hub"].stop()
            server.stop()
    report(bare, ours, timings, args)


def report(bare: list[float], ours: list[float], timings: list[dict[str, Any]],
           args: argparse.Namespace) -> None:
    pipeline, chordline = statistics.median(bare), statistics.median(ours)
    overhead = chordline - pipeline
    print(f"diffusion overhead: {args.runs} text-to-image jobs, {PARAMETERS['width']}x"
          f"{PARAMETERS['height']}, {args.steps} steps, random UNet x{args.scale}, CPU")
    print(f"  pipeline called directly       {pipeline * 1000:8.1f} ms (median)")
    print(f"  through Chordline, end to end  {chordline * 1000:8.1f} ms (median)")
    inference = statistics.median(t["inference_ms"] for t in timings)
    waited = statistics.median(t["queue_wait_ms"] for t in timings)
    print(f"    of which the worker's pipeline {inference:6.0f} ms, queue wait {waited:.0f} ms")
    print(f"  overhead per job               {overhead * 1000:8.1f} ms = "
          f"{100 * overhead / pipeline:.1f} % of the pipeline's time (goal < 5 %)")


if __name__ == "__main__":
    main()
