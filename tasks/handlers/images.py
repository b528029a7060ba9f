"""The built-in generation handlers, real and deterministic, on the CPU with Pillow."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from PIL import Image, ImageFilter, ImageOps

from tasks.artifacts import artifact_id_from_url
from tasks.handlers.base import Handler, JobContext, Limits
from tasks.handlers.render import paint

MAX_SEED = 2**32 - 1


def _random_seed() -> int:
    return random.randint(0, MAX_SEED)


def _check_image_url(url: str) -> None:
    if artifact_id_from_url(url) is None:
        raise ValidationError(
            "must reference one of your artifacts (/api/artifacts/<id>); "
            "upload an image with POST /api/artifacts first")


def _side(limits: Limits, default: int | None) -> fields.Integer:
    return fields.Integer(
        load_default=default, validate=validate.Range(64, limits.max_image_side))


def _sampling(limits: Limits) -> dict[str, fields.Field]:
    """Parameters every diffusion-style handler takes."""
    return {
        "seed": fields.Integer(load_default=_random_seed, validate=validate.Range(0, MAX_SEED)),
        "steps": fields.Integer(load_default=20, validate=validate.Range(1, 150)),
        "guidance_scale": fields.Float(load_default=7.5, validate=validate.Range(0, 30)),
        "negative_prompt": fields.String(
            load_default="", validate=validate.Length(max=limits.max_prompt_length)),
        "high_quality": fields.Boolean(load_default=False),
        "model": fields.String(validate=validate.Length(max=200)),
    }


def _input(limits: Limits) -> dict[str, fields.Field]:
    return {"image_url": fields.String(
        required=True, validate=[validate.Length(max=2048), _check_image_url])}


class MultipleOf8(Schema):
    @validates_schema
    def _multiple_of_8(self, data: Mapping[str, Any], **_: Any) -> None:
        for name in ("width", "height"):
            if data.get(name) is not None and data[name] % 8:
                raise ValidationError("must be a multiple of 8", field_name=name)


class TextToImage(Handler):
    """Paint an image from a prompt and a seed."""

    type = "text-to-image"
    prompt_required = True
    base_gpu_memory = 8
    model_type = "stable-diffusion"

    def parameters(self, limits: Limits) -> Schema:
        return MultipleOf8.from_dict({
            "width": _side(limits, 512), "height": _side(limits, 512),
            "batch_size": fields.Integer(load_default=1, validate=validate.Range(1, 8)),
            **_sampling(limits),
        }, name="TextToImageParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        batch = p["batch_size"]
        for i in range(batch):
            done = i * 100

            def report(pct: float, done: int = done) -> None:
                ctx.progress((done + pct) / batch)

            image = paint(ctx.prompt, p["seed"] + i, p["width"], p["height"], p["steps"], report)
            ctx.save(image)
        return {"artifacts": ctx.saved, "seed": p["seed"]}


class ImageToImage(Handler):
    """Repaint an input image towards a prompt; `strength` sets how far."""

    type = "image-to-image"

    def parameters(self, limits: Limits) -> Schema:
        return MultipleOf8.from_dict({
            **_input(limits), "width": _side(limits, None), "height": _side(limits, None),
            "strength": fields.Float(load_default=0.6, validate=validate.Range(0, 1)),
            **_sampling(limits),
        }, name="ImageToImageParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        source = ctx.input_image()
        size = (p.get("width") or source.width, p.get("height") or source.height)
        source = source.resize(size, Image.Resampling.LANCZOS)
        painted = paint(ctx.prompt, p["seed"], size[0], size[1], p["steps"], ctx.progress)
        ctx.save(Image.blend(source, painted, p["strength"]))
        return {"artifacts": ctx.saved, "seed": p["seed"]}


class ControlNet(Handler):
    """Paint a prompt guided by the structure (edges or depth) of a control image."""

    type = "controlnet"
    base_gpu_memory = 16

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            **_input(limits),
            "controlnet_type": fields.String(
                load_default="canny", validate=validate.OneOf(["canny", "depth", "scribble"])),
            "conditioning_scale": fields.Float(load_default=1.0, validate=validate.Range(0, 2)),
            **_sampling(limits),
        }, name="ControlNetParameters")()

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        control = self._control_map(ctx.input_image(), p["controlnet_type"])
        ctx.progress(10)
        painted = paint(ctx.prompt, p["seed"], control.width, control.height, p["steps"],
                        lambda pct: ctx.progress(10 + pct * 0.9))
        strength = min(255, int(255 * p["conditioning_scale"] / 2))
        mask = control.point(lambda v: min(255, v * strength // 128))
        ctx.save(Image.composite(ImageOps.invert(painted), painted, mask))
        return {"artifacts": ctx.saved, "seed": p["seed"]}

    @staticmethod
    def _control_map(image: Image.Image, kind: str) -> Image.Image:
        grey = image.convert("L")
        if kind == "depth":
            return ImageOps.autocontrast(grey.filter(ImageFilter.GaussianBlur(4)))
        edges = grey.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
        return edges.filter(ImageFilter.MaxFilter(5)) if kind == "scribble" else edges


class Upscale(Handler):
    """Enlarge an image by `scale_factor` with a Lanczos filter."""

    type = "upscale"
    base_gpu_memory = 12
    model_type = "upscaler"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            **_input(limits),
            "scale_factor": fields.Float(load_default=2.0, validate=validate.Range(1, 4)),
        }, name="UpscaleParameters")()

    def input_size(self, params: Mapping[str, Any], size: tuple[int, int]) -> tuple[int, int]:
        factor = params["scale_factor"]
        return round(size[0] * factor), round(size[1] * factor)

    def run(self, ctx: JobContext) -> dict[str, Any]:
        source = ctx.input_image()
        ctx.progress(10)
        size = self.input_size(ctx.parameters, source.size)
        result = source.resize(size, Image.Resampling.LANCZOS)
        ctx.progress(90)
        ctx.save(result.filter(ImageFilter.UnsharpMask(radius=1, percent=60)))
        return {"artifacts": ctx.saved, "scale_factor": ctx.parameters["scale_factor"]}


BUILTIN: tuple[type[Handler], ...] = (TextToImage, ImageToImage, ControlNet, Upscale)
