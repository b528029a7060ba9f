"""The model catalog: the models a node has on disk (CHORDLINE_MODELS, YAML or JSON).

    {"models": [{"name": "sd15", "path": "/models/sd15",
                 "types": ["text-to-image", "image-to-image"], "vram_gb": 6}, ...]}

A malformed file stops the worker at start-up; an entry whose directory is
missing or broken only marks that model unavailable on this node, with the
reason, and the node keeps serving the rest. An entry without `path` is a model
that needs no files (the `simulate` stand-in's models).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from tasks.core.errors import ConfigError
from tasks.core.names import MODEL_NAME

log = logging.getLogger(__name__)
# What marks a diffusers directory: a pipeline's index, or one model's config.
MARKERS = ("model_index.json", "config.json")
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".ckpt"}


class ModelEntrySchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(
        MODEL_NAME, error="must be 1-100 letters, digits, . _ -"))
    path = fields.String(load_default=None, allow_none=True)
    types = fields.List(fields.String(validate=validate.Length(1, 100)), load_default=list)
    vram_gb = fields.Float(load_default=None, allow_none=True,
                           validate=validate.Range(min=0, min_inclusive=False, max=4096))
    base = fields.String(load_default=None, allow_none=True)
    # The model a job of one of its types runs when it names none.
    default = fields.Boolean(load_default=False)


class CatalogSchema(Schema):
    models = fields.List(fields.Nested(ModelEntrySchema), required=True)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    path: str | None = None
    types: tuple[str, ...] = ()
    vram_gb: float | None = None
    base: str | None = None
    default: bool = False
    # Why this node cannot use it (None: available).
    unavailable: str | None = None

    def serves(self, job_type: str) -> bool:
        return not self.types or job_type in self.types

    def describe(self) -> dict[str, Any]:
        """What the fleet is told of it (the API validates jobs' models against this)."""
        return {"types": list(self.types), "vram_gb": self.vram_gb, "base": self.base,
                "default": self.default}


@dataclass(frozen=True)
class Catalog:
    models: dict[str, CatalogModel] = field(default_factory=dict)

    def available(self) -> dict[str, frozenset[str]]:
        """Usable models, each with the job types it may serve (empty: any)."""
        return {m.name: frozenset(m.types) for m in self.models.values() if not m.unavailable}

    def unavailable(self) -> dict[str, str]:
        return {m.name: m.unavailable for m in self.models.values() if m.unavailable}

    def usable(self, name: str, job_type: str) -> CatalogModel | None:
        model = self.models.get(name)
        return model if model and not model.unavailable and model.serves(job_type) else None

    def default_for(self, job_type: str) -> CatalogModel | None:
        """The model this node runs for a job of this type that names none (models with
        files only)."""
        name = default_model({n: d for n, d in self.describe().items() if self.models[n].path},
                             job_type)
        return self.models[name] if name else None

    def describe(self) -> dict[str, dict[str, Any]]:
        return {m.name: m.describe() for m in self.models.values() if not m.unavailable}

    def mark_unavailable(self, name: str, reason: str) -> None:
        """A model that failed to load here: the node stops offering it."""
        if name in self.models:
            self.models[name] = replace(self.models[name], unavailable=reason)

    @classmethod
    def load(cls, path: str) -> Catalog:
        """The catalog in `path` ('' for none); raises ConfigError when malformed."""
        if not path:
            return cls()
        try:
            text = Path(path).read_text()
            raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            entries = CatalogSchema().load(raw if isinstance(raw, dict) else {})["models"]
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"CHORDLINE_MODELS: cannot read {path}: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(f"CHORDLINE_MODELS: {path} is malformed: "
                              f"{exc.normalized_messages()}") from None
        return cls.from_entries(entries, Path(path).parent)

    @classmethod
    def from_entries(cls, entries: list[dict[str, Any]], root: Path) -> Catalog:
        names = [e["name"] for e in entries]
        if len(set(names)) != len(names):
            raise ConfigError("CHORDLINE_MODELS: a model name is listed twice")
        models = {}
        for entry in entries:
            path = str(root / entry["path"]) if entry["path"] else None
            reason = _check_path(path)
            if reason is None and path and not entry["types"]:
                reason = "it lists no types (the job types it serves)"
            if reason is None and entry["base"] and entry["base"] not in names:
                reason = f"its base {entry['base']!r} is not in the catalog"
            if reason:
                log.warning("model %s is unavailable on this node: %s", entry["name"], reason)
            vram = entry["vram_gb"] or (estimate_vram_gb(path) if path and not reason else None)
            models[entry["name"]] = CatalogModel(
                entry["name"], path, tuple(entry["types"]), vram, entry["base"],
                entry["default"], reason)
        return cls(models)


def default_model(models: Mapping[str, Mapping[str, Any]], job_type: str) -> str | None:
    """Which of these models (name -> what `describe` says) runs a job of this type that
    names none: one marked default, else the first by name. The API applies it to the
    fleet's models, a node to its own."""
    serving = sorted((not info.get("default"), name) for name, info in models.items()
                     if job_type in info["types"])
    return serving[0][1] if serving else None


def estimate_vram_gb(path: str) -> float:
    """A catalog entry without `vram_gb`: its weights, half again for activations, and a
    gigabyte for the CUDA context (state it in the catalog to be exact)."""
    weights = sum(f.stat().st_size for f in Path(path).rglob("*")
                  if f.suffix in WEIGHT_SUFFIXES)
    return round(weights / 1e9 * 1.5 + 1, 1)


def _check_path(path: str | None) -> str | None:
    """Why a diffusers directory cannot be loaded, as far as a look (not a load) tells."""
    if path is None:
        return None
    directory = Path(path)
    if not directory.is_dir():
        return f"{path} is not a directory"
    marker = next((directory / m for m in MARKERS if (directory / m).is_file()), None)
    if marker is None:
        return f"{path} has no {' or '.join(MARKERS)}"
    try:
        config = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        return f"{marker} is not valid JSON: {exc}"
    if not isinstance(config, dict) or "_class_name" not in config:
        return f"{marker} names no _class_name"
    return None
