"""Handlers for tests and benchmarks, enabled by CHORDLINE_TEST_HANDLERS=1 only."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from tasks.core.names import MODEL_NAME
from tasks.handlers.base import (
    CompensationContext,
    Handler,
    JobContext,
    JobError,
    Limits,
    Requirements,
)

log = logging.getLogger(__name__)


def _compensation() -> dict[str, fields.Field]:
    """How a test step's compensation behaves: `fail` always fails; it may also fail
    its first `compensation_failures` attempts, or take `compensation_seconds`."""
    return {
        "compensation": fields.String(load_default="ok", validate=validate.OneOf(["ok", "fail"])),
        "compensation_failures": fields.Integer(load_default=0, validate=validate.Range(0, 100)),
        "compensation_seconds": fields.Float(load_default=0.0, validate=validate.Range(0, 600)),
    }


class Compensable(Handler):
    """A test handler whose compensation does as its parameters say."""

    def compensate(self, ctx: CompensationContext) -> dict[str, Any]:
        p = ctx.parameters
        time.sleep(p["compensation_seconds"])
        if p["compensation"] == "fail" or ctx.attempt <= p["compensation_failures"]:
            raise RuntimeError(f"compensation failed on attempt {ctx.attempt}")
        return {**super().compensate(ctx), "attempt": ctx.attempt}


class Echo(Compensable):
    """Return `value` as the result."""

    type = "echo"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({"value": fields.Raw(load_default=None, allow_none=True),
                                 **_compensation()}, name="EchoParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        return {"value": ctx.parameters["value"]}


class Sleep(Compensable):
    """Sleep `seconds`, reporting progress as it goes; stoppable unless `interruptible`
    is false."""

    type = "sleep"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            "seconds": fields.Float(required=True, validate=validate.Range(0, 3600)),
            "interruptible": fields.Boolean(load_default=True),
            **_compensation(),
        }, name="SleepParameters")()

    def interruptible(self, params: Mapping[str, Any]) -> bool:
        return bool(params["interruptible"])

    def run(self, ctx: JobContext) -> dict[str, Any]:
        seconds = ctx.parameters["seconds"]
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            ctx.progress(100 * (1 - max(left - 0.1, 0) / seconds))
        return {"slept": seconds}


class Fail(Handler):
    """Fail with `message` after `seconds`; with `kill_worker` the executing process
    dies instead."""

    type = "fail"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            "message": fields.String(load_default="failed on purpose",
                                     validate=validate.Length(max=1000)),
            "seconds": fields.Float(load_default=0.0, validate=validate.Range(0, 3600)),
            "kill_worker": fields.Boolean(load_default=False),
        }, name="FailParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        time.sleep(ctx.parameters["seconds"])
        if ctx.parameters["kill_worker"]:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(ctx.parameters["message"])


class Flaky(Compensable):
    """Fail the first `fail_times` attempts, then succeed."""

    type = "flaky"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            "fail_times": fields.Integer(required=True, validate=validate.Range(0, 100)),
            **_compensation(),
        }, name="FlakyParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        if ctx.attempt <= ctx.parameters["fail_times"]:
            raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
        return {"attempts": ctx.attempt}


class Simulate(Handler):
    """A GPU model for routing tests and benchmarks: `load_seconds` to load `model` where
    the GPU does not hold it (evicting what no longer fits in its memory), then
    `seconds` of work, with progress, and the model stays warm on that GPU."""

    type = "simulate"
    uses_gpu = True

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            "model": fields.String(required=True, validate=validate.Regexp(
                MODEL_NAME, error="must be 1-100 letters, digits, . _ -")),
            "seconds": fields.Float(load_default=1.0, validate=validate.Range(0, 3600)),
            "load_seconds": fields.Float(load_default=0.0, validate=validate.Range(0, 3600)),
            "vram_gb": fields.Integer(load_default=1, strict=True,
                                      validate=validate.Range(1, 4096)),
        }, name="SimulateParameters")()

    def requirements(self, params: Mapping[str, Any]) -> Requirements:
        return Requirements(params["vram_gb"], self.type, [self.type], model=params["model"])

    def run(self, ctx: JobContext) -> dict[str, Any]:
        if ctx.models is None or ctx.gpu is None:
            raise JobError("NO_GPU", "simulate jobs run on GPU workers only")
        p = ctx.parameters
        # The run's interval, for tests that check no job runs twice at once.
        log.info("simulate job %s: run begins at %.3f", ctx.job_id, time.time())
        outcome = "stopped"
        try:
            model = ctx.models.acquire(p["model"], p["vram_gb"],
                                       lambda: _work(ctx, p["load_seconds"], 0, 30))
            _work(ctx, p["seconds"], 30 if model.loaded else 0, 100)
            outcome = "finished"
        finally:
            log.info("simulate job %s: run ends at %.3f (%s)", ctx.job_id, time.time(), outcome)
        return {"model": p["model"], "loaded": model.loaded,
                "load_seconds": round(model.load_seconds, 3), "seconds": p["seconds"],
                "gpu": {"index": ctx.gpu.index, "name": ctx.gpu.name},
                # As the diffusion backend reports them (the console's time split).
                "timings": {"queue_wait_ms": ctx.queue_wait_ms,
                            "model_load_ms": round(model.load_seconds * 1000)}}


def _work(ctx: JobContext, seconds: float, start: float, end: float) -> None:
    """Take `seconds`, reporting progress from `start` to `end` percent as it goes."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
        ctx.progress(end - (end - start) * max(left - 0.05, 0) / seconds)
    ctx.progress(end)


TEST_HANDLERS: tuple[type[Handler], ...] = (Echo, Sleep, Fail, Flaky, Simulate)
