"""A handler plugin, as a deployment would ship one (`register(registry)`)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from tasks.handlers import Handler, HandlerRegistry, JobContext, Limits


class Watermark(Handler):
    type = "watermark"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({}, name="WatermarkParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        return {"marked": True}


def register(registry: HandlerRegistry) -> None:
    registry.register(Watermark())
