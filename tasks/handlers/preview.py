"""The preview backend: deterministic Pillow painters, and Lanczos upscaling.

The painters are a stand-in for a diffusion model: the same prompt and seed give the
same picture (circles and triangles), so a development machine and the tests can run
the whole platform without a GPU. A worker offers them only with
CHORDLINE_PREVIEW_HANDLERS=1 (make run and the tests), and their results say
`"backend": "preview"`, so no production node answers a real request with circles.
Lanczos upscaling is a real upscale, offered everywhere (`"backend": "lanczos"`).
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageOps

from tasks.handlers.base import Handler, JobContext
from tasks.handlers.images import ControlNet, ImageToImage, TextToImage, Upscale
from tasks.handlers.render import paint


class PreviewTextToImage(TextToImage):
    """Paint an image from a prompt and a seed."""

    backend = "preview"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        batch = p["batch_size"]
        for i in range(batch):
            done = i * 100

            def report(pct: float, done: int = done) -> None:
                ctx.progress((done + pct) / batch)

            image = paint(ctx.prompt, p["seed"] + i, p["width"], p["height"], p["steps"], report)
            ctx.save(image)
        return self.result(ctx, seed=p["seed"])


class PreviewImageToImage(ImageToImage):
    """Blend a painting of the prompt over the input image, `strength` of the way."""

    backend = "preview"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        source = ctx.input_image()
        size = (p.get("width") or source.width, p.get("height") or source.height)
        source = source.resize(size, Image.Resampling.LANCZOS)
        painted = paint(ctx.prompt, p["seed"], size[0], size[1], p["steps"], ctx.progress)
        ctx.save(Image.blend(source, painted, p["strength"]))
        return self.result(ctx, seed=p["seed"])


class PreviewControlNet(ControlNet):
    """Paint the prompt, inverted along the control map's structure."""

    backend = "preview"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.parameters
        control = self.control_map(ctx.input_image(), p["controlnet_type"])
        ctx.progress(10)
        painted = paint(ctx.prompt, p["seed"], control.width, control.height, p["steps"],
                        lambda pct: ctx.progress(10 + pct * 0.9))
        strength = min(255, int(255 * p["conditioning_scale"] / 2))
        mask = control.point(lambda v: min(255, v * strength // 128))
        ctx.save(Image.composite(ImageOps.invert(painted), painted, mask))
        return self.result(ctx, seed=p["seed"])


class LanczosUpscale(Upscale):
    """Enlarge with a Lanczos filter and a light unsharp mask."""

    backend = "lanczos"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        source = ctx.input_image()
        ctx.progress(10)
        self.finish(ctx, source.resize(self.input_size(ctx.parameters, source.size),
                                       Image.Resampling.LANCZOS), source)
        ctx.progress(90)
        return self.result(ctx, scale_factor=ctx.parameters["scale_factor"])


PREVIEW: tuple[type[Handler], ...] = (PreviewTextToImage, PreviewImageToImage, PreviewControlNet)
BUILTIN: tuple[type[Handler], ...] = (*PREVIEW, LanczosUpscale)
