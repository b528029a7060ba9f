"""The four image job types: their parameters, requirements and output sizes.

These classes define a type; a backend runs it: the diffusers pipelines of a GPU
node (tasks/handlers/diffusion.py), or the Pillow preview painters
(tasks/handlers/preview.py), which a node offers only when told to. Every process
validates with the same definitions, so the API never needs torch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from PIL import Image, ImageFilter, ImageOps

from tasks.core.names import MODEL_NAME
from tasks.fleet.offers import Requirements
from tasks.handlers.base import Handler, JobContext, Limits
from tasks.storage.artifacts import artifact_id_from_url

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


def _model() -> fields.String:
    """The catalog model to run; left out, the fleet's default for the type."""
    return fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        MODEL_NAME, error="must be a model name (1-100 letters, digits, . _ -)"))


def _sampling(limits: Limits) -> dict[str, fields.Field]:
    """Parameters every diffusion-style handler takes."""
    return {
        "seed": fields.Integer(load_default=_random_seed, validate=validate.Range(0, MAX_SEED)),
        "steps": fields.Integer(load_default=20, validate=validate.Range(1, 150)),
        "guidance_scale": fields.Float(load_default=7.5, validate=validate.Range(0, 30)),
        "negative_prompt": fields.String(
            load_default="", validate=validate.Length(max=limits.max_prompt_length)),
        "high_quality": fields.Boolean(load_default=False),
        "model": _model(),
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


class ImageJob(Handler):
    """A job that runs a model (named in `parameters.model`) and saves images."""

    backend = ""

    def requirements(self, params: Mapping[str, Any]) -> Requirements:
        """The seed's estimate, and the model it runs: only a node that has it takes it."""
        return replace(super().requirements(params), model=params.get("model") or "")

    def result(self, ctx: JobContext, **extra: Any) -> dict[str, Any]:
        """What every image job answers: its images and which backend made them."""
        return {"artifacts": ctx.saved, "backend": self.backend, **extra}

    @staticmethod
    def output_size(params: Mapping[str, Any], source: Image.Image) -> tuple[int, int]:
        """The requested size, or the input's rounded down to multiples of 8."""
        return (params.get("width") or max(64, source.width // 8 * 8),
                params.get("height") or max(64, source.height // 8 * 8))


class TextToImage(ImageJob):
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


class ImageToImage(ImageJob):
    """`strength` sets how far the input image is repainted towards the prompt."""

    type = "image-to-image"

    def parameters(self, limits: Limits) -> Schema:
        return MultipleOf8.from_dict({
            **_input(limits), "width": _side(limits, None), "height": _side(limits, None),
            "strength": fields.Float(load_default=0.6, validate=validate.Range(0, 1)),
            **_sampling(limits),
        }, name="ImageToImageParameters")()


class ControlNet(ImageJob):
    """A prompt painted along the structure (edges, depth, scribble) of a control image."""

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

    @staticmethod
    def control_map(image: Image.Image, kind: str) -> Image.Image:
        """The control image: Canny-like edges, a blurred depth stand-in, or thick strokes."""
        grey = image.convert("L")
        if kind == "depth":
            return ImageOps.autocontrast(grey.filter(ImageFilter.GaussianBlur(4)))
        edges = grey.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
        return edges.filter(ImageFilter.MaxFilter(5)) if kind == "scribble" else edges


class Upscale(ImageJob):
    """Enlarge an image by `scale_factor`: a catalog upscaler where the fleet has one,
    else Lanczos."""

    type = "upscale"
    base_gpu_memory = 12
    model_type = "upscaler"

    def parameters(self, limits: Limits) -> Schema:
        return Schema.from_dict({
            **_input(limits),
            "scale_factor": fields.Float(load_default=2.0, validate=validate.Range(1, 4)),
            "model": _model(),
            "seed": fields.Integer(load_default=_random_seed, validate=validate.Range(0, MAX_SEED)),
            "steps": fields.Integer(load_default=20, validate=validate.Range(1, 150)),
        }, name="UpscaleParameters")()

    def input_size(self, params: Mapping[str, Any], size: tuple[int, int]) -> tuple[int, int]:
        factor = params["scale_factor"]
        return round(size[0] * factor), round(size[1] * factor)

    def finish(self, ctx: JobContext, image: Image.Image, source: Image.Image) -> None:
        """Resize to exactly the requested factor (an upscaler's own is fixed) and save."""
        size = self.input_size(ctx.parameters, source.size)
        if image.size != size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        ctx.save(image.filter(ImageFilter.UnsharpMask(radius=1, percent=60)))
