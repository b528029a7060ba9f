"""Diffusion overhead: one text-to-image generation by calling the pipeline directly, and the
same job through Chordline (HTTP submit, queue, GPU worker, events over WebSocket).

Run with `make bench` (or `python -m benchmarks.diffusion_overhead`). It builds a small
random-weight Stable Diffusion (no download) sized so that one generation takes about a
second on this machine's CPU, starts its own Redis, the API on a real socket and one node
whose declared GPU runs the model, and times N jobs one after another each way, from the
submit to the `job.completed` event a WebSocket client receives. The difference is
Chordline's overhead per job; the goal is under 5 % of the pipeline's own time.

torch runs on one thread both ways (`--threads`): the other core plays the host CPU of a
GPU node, where Redis, the API and the worker's own bookkeeping run beside the model
instead of competing with it for the same two cores.
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

PARAMETERS = {"width": 128, "height": 128, "guidance_scale": 7.5}


class Direct:
    """The pipeline called in this process, as a script would."""

    def __init__(self, folder: Path, steps: int, threads: int) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        torch.set_num_threads(threads)
        self._torch = torch
        self._steps = steps
        self._pipeline = AutoPipelineForText2Image.from_pretrained(folder, local_files_only=True)
        self._pipeline.set_progress_bar_config(disable=True)

    def run(self, seed: int) -> float:
        started = time.perf_counter()
        self._pipeline("a red fox in snow", num_inference_steps=self._steps,
                       generator=self._torch.Generator().manual_seed(seed), **PARAMETERS)
        return time.perf_counter() - started


def through_chordline(client: ChordlineClient, steps: int,
                      seed: int) -> tuple[float, dict[str, Any]]:
    """Seconds from submit to the completed event a WebSocket client receives, and the
    job's own timings."""
    started = time.perf_counter()
    kind, job_id = client.submit({"type": "text-to-image", "prompt": "a red fox in snow",
                                  "parameters": {**PARAMETERS, "steps": steps, "seed": seed}})
    last = list(client.watch(kind, job_id))[-1]
    assert last["type"] == "job.completed", last
    return time.perf_counter() - started, last["data"]["result"]["timings"]


def rounds(direct: Direct, client: ChordlineClient, steps: int,
           runs: int) -> tuple[list[float], list[float], list[dict[str, Any]]]:
    """Alternate the two (after a warm-up of each, which loads the model), so that both
    meet the same machine."""
    direct.run(0)
    through_chordline(client, steps, 0)
    bare, ours, timings = [], [], []
    for seed in range(1, runs + 1):
        bare.append(direct.run(seed))
        seconds, timing = through_chordline(client, steps, seed)
        ours.append(seconds)
        timings.append(timing)
    return bare, ours, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=16, help="denoising steps per image")
    parser.add_argument("--scale", type=int, default=4, help="width of the random UNet")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both ways")
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
        node = NodeProcess({**env, "CHORDLINE_GPUS": "BenchGPU:24", "CHORDLINE_MODELS": catalog,
                            "OMP_NUM_THREADS": str(args.threads)}, root / "node.log",
                           "bench").start()
        try:
            bare, ours, timings = rounds(Direct(model, args.steps, args.threads),
                                         ChordlineClient(web.url, "key-tenant-a"), args.steps,
                                         args.runs)
        finally:
            node.stop()
            web.stop()
            app.extensions["event_hub"].stop()
            server.stop()
    report(bare, ours, timings, args)


def report(bare: list[float], ours: list[float], timings: list[dict[str, Any]],
           args: argparse.Namespace) -> None:
    pipeline, chordline = statistics.median(bare), statistics.median(ours)
    inference = statistics.median(t["inference_ms"] for t in timings) / 1000
    around = statistics.median(o - t["inference_ms"] / 1000 for o, t in zip(ours, timings,
                                                                            strict=True))
    waited = statistics.median(t["queue_wait_ms"] for t in timings)
    print(f"diffusion overhead: {args.runs} text-to-image jobs each way, alternating, "
          f"{PARAMETERS['width']}x{PARAMETERS['height']}, {args.steps} steps, random UNet "
          f"x{args.scale}, CPU, {args.threads} torch thread(s); medians")
    print(f"  pipeline called directly            {pipeline * 1000:8.1f} ms")
    print(f"  through Chordline, submit to event  {chordline * 1000:8.1f} ms "
          f"({100 * (chordline - pipeline) / pipeline:+.1f} %)")
    print(f"    the worker's pipeline call         {inference * 1000:8.1f} ms "
          f"({100 * (inference - pipeline) / pipeline:+.1f} %: the same cores also carry Redis,"
          " the API and the events)")
    print(f"    the rest: HTTP, queue (wait {waited:.0f} ms), claim, events, WebSocket "
          f"{around * 1000:6.1f} ms = {100 * around / pipeline:.1f} % (goal < 5 %)")


if __name__ == "__main__":
    main()
