"""Diffusers pipelines on one GPU slot: loaded from the catalog once, kept warm, freed.

A catalog model is loaded with `local_files_only` (a worker never downloads weights)
into the slot's ModelCache, which keeps it on the GPU until memory is needed for
another; the pipeline a job type needs (text-to-image, image-to-image, ControlNet)
is derived from the loaded one with `from_pipe`, which shares its weights. torch and
diffusers are imported on first use, so the API and CPU workers never load them;
a GPU worker that runs them imports them before its pool forks (workers/bootstrap.py).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

from tasks.core.errors import JobError
from tasks.fleet.catalog import CatalogModel

log = logging.getLogger(__name__)
# What may stay allocated on the GPU after every model is dropped, before the
# process counts as unable to give memory back (a fresh CUDA context is needed).
LEFT_OVER_BYTES = 256 << 20


def preload() -> None:
    """Import torch and diffusers now (seconds), not in each pool process or under a job's
    lease. Importing creates no CUDA context and starts no OpenMP threads, so processes
    forked after it can use both; running a tensor operation here would not be safe."""
    import diffusers  # noqa: F401
    import torch  # noqa: F401


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(model: CatalogModel) -> Any:
    """A catalog model on this slot's device: a pipeline (`model_index.json`), or one
    model such as a ControlNet (`config.json`, the class it names)."""
    import diffusers
    import torch

    on = device()
    dtype = torch.float16 if on == "cuda" else torch.float32
    assert model.path is not None
    path = Path(model.path)
    try:
        if (path / "model_index.json").is_file():
            loaded = diffusers.DiffusionPipeline.from_pretrained(
                path, local_files_only=True, dtype=dtype)
            loaded.set_progress_bar_config(disable=True)
        else:
            name = json.loads((path / "config.json").read_text())["_class_name"]
            loaded = getattr(diffusers, name).from_pretrained(
                path, local_files_only=True, dtype=dtype)
        return loaded.to(on)
    except (OSError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ModelBroken(model.name, exc) from exc


class ModelBroken(JobError):
    """A catalog model that does not load here; the node stops offering it."""

    def __init__(self, name: str, exc: Exception) -> None:
        super().__init__("MODEL_UNAVAILABLE", f"model {name} does not load on this node: "
                         f"{type(exc).__name__}: {exc}", retryable=True)
        self.model = name


def derive(kind: str, base: Any, **components: Any) -> Any:
    """The pipeline for a job type, sharing the loaded pipeline's weights."""
    import diffusers

    auto = {"text-to-image": diffusers.AutoPipelineForText2Image,
            "image-to-image": diffusers.AutoPipelineForImage2Image}[kind]
    pipeline = auto.from_pipe(base, **components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def release() -> None:
    """Give the memory of dropped pipelines back (to the CUDA allocator's pool, then the
    driver)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def memory_back() -> bool:
    """After dropping every model: whether the GPU memory came back."""
    import torch

    if not torch.cuda.is_available():
        return True
    return int(torch.cuda.memory_allocated()) < LEFT_OVER_BYTES


def out_of_memory() -> type[BaseException]:
    import torch

    return torch.OutOfMemoryError
