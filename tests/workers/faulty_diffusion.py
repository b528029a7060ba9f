"""A text-to-image handler whose pipeline runs out of GPU memory on request (a test plugin).

A test node loads it with CHORDLINE_HANDLER_MODULES. A prompt that starts with "run out
of memory" raises torch's OutOfMemoryError from inside the pipeline, at its second
step, and the GPU then keeps its memory as a leaking CUDA context would, so the pool
process must be replaced; any other prompt runs the real pipeline.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from tasks.handlers.base import JobContext
from tasks.handlers.diffusion import DiffusersTextToImage
from tasks.handlers.registry import HandlerRegistry

TRIGGER = "run out of memory"


class RunsOutOfMemory:
    """A pipeline that fails at its second step as CUDA would when memory runs out."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def __call__(self, callback_on_step_end: Any = None, **kwargs: Any) -> Any:
        import torch

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: Any) -> Any:
            tensors = callback_on_step_end(pipeline, step, timestep, tensors)
            if step == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return tensors

        return self._pipeline(callback_on_step_end=on_step_end, **kwargs)


class OutOfMemoryOnRequest(DiffusersTextToImage):
    def generate(self, ctx: JobContext, pipeline: Any, steps: int,
                 **kwargs: Any) -> tuple[list[Image.Image], float]:
        if ctx.prompt.startswith(TRIGGER):
            pipeline = RunsOutOfMemory(pipeline)
        return super().generate(ctx, pipeline, steps, **kwargs)

    def memory_back(self) -> bool:
        return False


def register(registry: HandlerRegistry) -> None:
    registry.register(OutOfMemoryOnRequest())
