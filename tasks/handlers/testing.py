"""Handlers for tests and benchmarks, enabled by CHORDLINE_TEST_HANDLERS=1 only."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from marshmallow import Schema, fields, validate

from tasks.handlers.base import Handler, JobContext, Limits


class Echo(Handler):
    """Return `value` as the result."""

    type = "echo"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({"value": fields.Raw(load_default=None, allow_none=True)},
                                name="EchoParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        return {"value": ctx.parameters["value"]}


class Sleep(Handler):
    """Sleep `seconds`, reporting progress as it goes."""

    type = "sleep"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict(
            {"seconds": fields.Float(required=True, validate=validate.Range(0, 3600))},
            name="SleepParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        seconds = ctx.parameters["seconds"]
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            ctx.progress(100 * (1 - max(left - 0.1, 0) / seconds))
        return {"slept": seconds}


class Fail(Handler):
    """Fail with `message`; with `kill_worker` the executing process dies instead."""

    type = "fail"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            "message": fields.String(load_default="failed on purpose",
                                     validate=validate.Length(max=1000)),
            "kill_worker": fields.Boolean(load_default=False),
        }, name="FailParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        if ctx.parameters["kill_worker"]:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(ctx.parameters["message"])


class Flaky(Handler):
    """Fail the first `fail_times` attempts, then succeed."""

    type = "flaky"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict(
            {"fail_times": fields.Integer(required=True, validate=validate.Range(0, 100))},
            name="FlakyParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        if ctx.attempt <= ctx.parameters["fail_times"]:
            raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
        return {"attempts": ctx.attempt}


TEST_HANDLERS: tuple[type[Handler], ...] = (Echo, Sleep, Fail, Flaky)
