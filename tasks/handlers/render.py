"""A deterministic procedural painter: the CPU stand-in for a diffusion model.

The same prompt, seed and size always give the same pixels, so tests can assert
on outputs and a rerun reproduces a result, as a seeded diffusion run would.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter

Colour = tuple[int, int, int]


def palette(prompt: str, seed: int, size: int = 5) -> list[Colour]:
    """Colours derived from the prompt's words, so similar prompts look related."""
    words = prompt.lower().split() or ["untitled"]
    colours = []
    for i in range(size):
        digest = hashlib.sha256(f"{words[i % len(words)]}:{seed}:{i}".encode()).digest()
        colours.append((digest[0], digest[1], digest[2]))
    return colours


def paint(prompt: str, seed: int, width: int, height: int, steps: int,
          progress: Callable[[float], None] = lambda _p: None) -> Image.Image:
    """Paint `steps` layers of shapes over a gradient; report progress per layer."""
    rng = random.Random(f"{seed}\x00{prompt}")
    colours = palette(prompt, seed)
    top, bottom = Image.new("RGB", (width, height), colours[0]), Image.new(
        "RGB", (width, height), colours[1])
    image = Image.composite(bottom, top, Image.linear_gradient("L").resize((width, height)))
    draw = ImageDraw.Draw(image, "RGBA")
    for step in range(steps):
        for _ in range(3):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(0.03, 0.25) * min(width, height) * (1 - step / (steps + 1))
            colour = (*rng.choice(colours), rng.randint(60, 160))
            if rng.random() < 0.5:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            else:
                points = [(x + rng.uniform(-r, r), y + rng.uniform(-r, r)) for _ in range(3)]
                draw.polygon(points, fill=colour)
        progress(100 * (step + 1) / steps)
    return image.filter(ImageFilter.SMOOTH)
