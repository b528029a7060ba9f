"""The diffusers backend: the four image types, run by real models from the node's catalog.

A run takes its model from the GPU slot's cache (loading it only where it is not
warm), derives the pipeline its type needs, and runs it with a CPU `torch.Generator`
seeded from the job, so the same seed gives the same image on the same model.
Progress is reported at every denoising step (`callback_on_step_end`), and that report
is where a run stops, within a step, once its job was cancelled with `terminate` or its
workflow compensates: the exception leaves the pipeline before the image is decoded,
so nothing is saved. CUDA out-of-memory is an expected failure (`GPU_OUT_OF_MEMORY`,
retryable): every model is dropped, and the pool process is replaced after the job
when the memory does not come back, so the next job gets a fresh CUDA context.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from PIL import Image

from tasks.core.errors import JobError
from tasks.fleet import pipelines
from tasks.fleet.catalog import CatalogModel
from tasks.fleet.model_cache import Acquired
from tasks.handlers.base import JobContext
from tasks.handlers.images import ControlNet, ImageJob, ImageToImage, TextToImage, Upscale


class Diffusion(ImageJob):
    """What the four diffusers handlers share: the model, the run, the result."""

    uses_gpu = True
    backend = "diffusers"
    report_every_step = True

    def catalog_model(self, ctx: JobContext, name: str | None = None,
                      job_type: str | None = None) -> CatalogModel:
        """The job's model (or `name`) as this node's catalog has it."""
        name = name or ctx.parameters.get("model")
        job_type = job_type or self.type
        catalog = ctx.catalog
        model = (catalog.usable(name, job_type) if name else catalog.default_for(job_type)
                 ) if catalog else None
        if model is None:
            raise JobError("MODEL_UNAVAILABLE", f"model {name or '(default)'} is not available "
                           f"for {job_type} jobs on this node", retryable=True)
        return model

    def warm(self, ctx: JobContext, model: CatalogModel) -> Acquired:
        """The model on this slot's GPU, loaded unless it is warm; a model that does not
        load is withdrawn from this node (the job is retried elsewhere)."""
        assert ctx.models is not None
        try:
            return ctx.models.acquire(model.name, model.vram_gb or 1.0,
                                      lambda: pipelines.load(model))
        except pipelines.ModelBroken as exc:
            ctx.models.mark_broken(model.name, exc.message)
            raise

    def generate(self, ctx: JobContext, pipeline: Any, steps: int,
                 **kwargs: Any) -> tuple[list[Image.Image], float]:
        """Run the pipeline with the job's seed, reporting every step; its images and
        the seconds it took."""
        import torch

        generator = torch.Generator(device="cpu").manual_seed(ctx.parameters["seed"])
        started = time.monotonic()
        try:
            output = pipeline(generator=generator, **_progress(pipeline, ctx, steps), **kwargs)
        except pipelines.out_of_memory() as exc:
            self.recover(ctx)
            raise JobError("GPU_OUT_OF_MEMORY", f"the GPU ran out of memory: {exc}"[:500],
                           retryable=True) from None
        return list(output.images), time.monotonic() - started

    def recover(self, ctx: JobContext) -> None:
        """After an out-of-memory: drop every model; when the memory still does not come
        back, ask for a fresh pool process (a new CUDA context) once this job ends."""
        if ctx.models is not None:
            ctx.models.clear()
        pipelines.release()
        if not self.memory_back() and ctx.fresh_process is not None:
            ctx.fresh_process()

    def memory_back(self) -> bool:
        return pipelines.memory_back()

    def answer(self, ctx: JobContext, model: CatalogModel, loads: list[Acquired],
               seconds: float, **extra: Any) -> dict[str, Any]:
        """What a diffusers job answers: enough to reproduce it, and where its time went."""
        p = ctx.parameters
        return self.result(ctx, model=model.name, seed=p["seed"], steps=p["steps"], **extra,
                           timings={"queue_wait_ms": ctx.queue_wait_ms,
                                    "model_load_ms": round(sum(a.load_seconds for a in loads)
                                                           * 1000),
                                    "inference_ms": round(seconds * 1000)})


def _progress(pipeline: Any, ctx: JobContext, steps: int) -> dict[str, Any]:
    """The per-step callback: a progress report (which raises to stop the run), in the
    form the pipeline takes (`callback_on_step_end`, or older pipelines' `callback`)."""

    def report(step: int) -> None:
        ctx.progress(100 * (step + 1) / steps)

    def on_step_end(_pipeline: Any, step: int, _timestep: Any,
                    tensors: dict[str, Any]) -> dict[str, Any]:
        report(step)
        return tensors

    if "callback_on_step_end" in inspect.signature(pipeline.__call__).parameters:
        return {"callback_on_step_end": on_step_end}
    return {"callback": lambda step, _timestep, _latents: report(step), "callback_steps": 1}


def _sampling(ctx: JobContext, width: int, height: int) -> dict[str, Any]:
    p = ctx.parameters
    return {"prompt": ctx.prompt, "negative_prompt": p["negative_prompt"] or None,
            "num_inference_steps": p["steps"], "guidance_scale": p["guidance_scale"],
            "width": width, "height": height}


class DiffusersTextToImage(Diffusion, TextToImage):
    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        model = self.catalog_model(ctx)
        base = self.warm(ctx, model)
        images, seconds = self.generate(
            ctx, pipelines.derive(self.type, base.value), p["steps"],
            num_images_per_prompt=p["batch_size"], **_sampling(ctx, p["width"], p["height"]))
        for image in images:
            ctx.save(image)
        return self.answer(ctx, model, [base], seconds, guidance_scale=p["guidance_scale"],
                           width=p["width"], height=p["height"])


class DiffusersImageToImage(Diffusion, ImageToImage):
    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        model = self.catalog_model(ctx)
        base = self.warm(ctx, model)
        source = ctx.input_image().convert("RGB")
        width, height = self.output_size(p, source)
        kwargs = _sampling(ctx, width, height)
        del kwargs["width"], kwargs["height"]
        images, seconds = self.generate(
            ctx, pipelines.derive(self.type, base.value), max(1, int(p["steps"] * p["strength"])),
            image=source.resize((width, height), Image.Resampling.LANCZOS),
            strength=p["strength"], **kwargs)
        ctx.save(images[0])
        return self.answer(ctx, model, [base], seconds, guidance_scale=p["guidance_scale"],
                           strength=p["strength"], width=width, height=height)


class DiffusersControlNet(Diffusion, ControlNet):
    """A catalog ControlNet (`types: [controlnet]`, `base`: the pipeline it steers)."""

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        model = self.catalog_model(ctx)
        if model.base is None:
            raise JobError("MODEL_UNAVAILABLE", f"controlnet model {model.name} names no base")
        base_model = self.catalog_model(ctx, model.base, "text-to-image")
        base, controlnet = self.warm(ctx, base_model), self.warm(ctx, model)
        source = ctx.input_image().convert("RGB")
        width, height = self.output_size(p, source)
        control = self.control_map(source.resize((width, height)), p["controlnet_type"])
        images, seconds = self.generate(
            ctx, pipelines.derive("text-to-image", base.value, controlnet=controlnet.value),
            p["steps"], image=control.convert("RGB"),
            controlnet_conditioning_scale=p["conditioning_scale"],
            **_sampling(ctx, width, height))
        ctx.save(images[0])
        return self.answer(ctx, model, [base, controlnet], seconds, base=base_model.name,
                           controlnet_type=p["controlnet_type"], width=width, height=height,
                           guidance_scale=p["guidance_scale"])


class DiffusersUpscale(Diffusion, Upscale):
    """A catalog upscaler pipeline (Stable Diffusion's x4, say), then the exact factor."""

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        model = self.catalog_model(ctx)
        upscaler = self.warm(ctx, model)
        source = ctx.input_image().convert("RGB")
        images, seconds = self.generate(ctx, upscaler.value, p["steps"], image=source,
                                        prompt=ctx.prompt, num_inference_steps=p["steps"])
        self.finish(ctx, images[0], source)
        return self.answer(ctx, model, [upscaler], seconds, scale_factor=p["scale_factor"])


DIFFUSERS = {cls.type: cls for cls in (DiffusersTextToImage, DiffusersImageToImage,
                                       DiffusersControlNet, DiffusersUpscale)}
