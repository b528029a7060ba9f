"""The model cache of one GPU slot, and the catalog of a node's models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.core.errors import ConfigError
from tasks.fleet.catalog import Catalog
from tasks.fleet.model_cache import ModelCache, ModelTooLarge


def test_models_stay_warm_and_the_least_recently_used_goes_first() -> None:
    published: list[list[dict[str, Any]]] = []
    loads: list[str] = []
    cache = ModelCache(24, published.append, on_load=lambda name, _s: loads.append(name))
    for name in ("a", "b", "a"):
        cache.acquire(name, 10, lambda name=name: f"weights of {name}")  # type: ignore[misc]
    assert loads == ["a", "b"] and cache.names() == ["a", "b"]
    third = cache.acquire("c", 10, lambda: "c")
    assert third.loaded and cache.names() == ["c", "a"], "b was the least recently used"
    again = cache.acquire("a", 10, lambda: pytest.fail("a is warm"))
    assert not again.loaded and again.value == "weights of a" and again.load_seconds == 0
    # while a model loads it is announced as loading, so placement counts it as warm
    loading = [p for p in published if p and p[0]["state"] == "loading"]
    assert [p[0]["name"] for p in loading] == ["a", "b", "c"]
    assert published[-1] == [{"name": "a", "vram_gb": 10, "state": "loaded"},
                             {"name": "c", "vram_gb": 10, "state": "loaded"}]


def test_a_model_larger_than_the_gpu_is_refused_and_a_failed_load_leaves_nothing() -> None:
    cache = ModelCache(12, lambda _models: None)
    with pytest.raises(ModelTooLarge):
        cache.acquire("huge", 16, lambda: "x")

    def broken() -> str:
        raise RuntimeError("corrupt weights")

    with pytest.raises(RuntimeError):
        cache.acquire("bad", 4, broken)
    assert cache.names() == []


def test_a_catalog_marks_broken_entries_unavailable_and_keeps_the_rest(tmp_path: Path) -> None:
    good = tmp_path / "sd15"
    good.mkdir()
    (good / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (good / "unet.safetensors").write_bytes(b"\0" * 4096)
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model_index.json").write_text("{not json")
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [
        {"name": "sd15", "path": "sd15", "types": ["text-to-image"], "vram_gb": 6},
        {"name": "gone", "path": "/nowhere/at/all"},
        {"name": "empty", "path": "empty"},
        {"name": "canny", "path": "sd15", "types": ["controlnet"], "base": "sdxl"},
        {"name": "corrupt", "path": "corrupt"},
        {"name": "sd15-big", "path": "sd15", "types": ["text-to-image"], "default": True},
        {"name": "untyped", "path": "sd15"},
        {"name": "sim-a", "vram_gb": 10},
    ]}))
    catalog = Catalog.load(str(path))
    assert catalog.available() == {"sd15": frozenset({"text-to-image"}),
                                   "sd15-big": frozenset({"text-to-image"}),
                                   "sim-a": frozenset()}
    assert catalog.models["sd15-big"].vram_gb == 1, "estimated from its (tiny) weights"
    assert catalog.default_for("text-to-image").name == "sd15-big"  # type: ignore[union-attr]
    assert catalog.default_for("upscale") is None
    assert catalog.unavailable()["untyped"] == "it lists no types (the job types it serves)"
    reasons = catalog.unavailable()
    assert "corrupt/model_index.json is not valid JSON" in reasons["corrupt"]
    assert reasons["gone"] == "/nowhere/at/all is not a directory"
    assert "has no model_index.json or config.json" in reasons["empty"]
    assert reasons["canny"] == "its base 'sdxl' is not in the catalog"


@pytest.mark.parametrize(("text", "message"), [
    ("models: [{name: 'bad name!'}]", "malformed"),
    ("models: [{name: a}, {name: a}]", "listed twice"),
    ("{{{", "cannot read"),
])
def test_a_malformed_catalog_stops_the_worker(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Catalog.load(str(path))
