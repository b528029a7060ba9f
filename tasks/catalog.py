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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from tasks.fleet import MODEL_NAME
from tasks.settings import ConfigError

# What marks a diffusers directory: a pipeline's index, or one model's config.
MARKERS = ("model_index.json", "config.json")


class ModelEntrySchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(
        MODEL_NAME, error="must be 1-100 letters, digits, . _ -"))
    path = fields.String(load_default=None, allow_none=True)
    types = fields.List(fields.String(validate=validate.Length(1, 100)), load_default=list)
    vram_gb = fields.Float(load_default=None, allow_none=True,
                           validate=validate.Range(min=0, min_inclusive=False, max=4096))
    base = fields.String(load_default=None, allow_none=True)


class CatalogSchema(Schema):
    models = fields.List(fields.Nested(ModelEntrySchema), required=True)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    path: str | None = None
    types: tuple[str, ...] = ()
    vram_gb: float | None = None
    base: str | None = None
    # Why this node cannot use it (None: available).
    unavailable: str | None = None


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, CatalogModel] = field(default_factory=dict)

    def available(self) -> dict[str, frozenset[str]]:
        """Usable models, each with the job types it may serve (empty: any)."""
        return {m.name: frozenset(m.types) for m in self.models.values() if not m.unavailable}

    def unavailable(self) -> dict[str, str]:
        return {m.name: m.unavailable for m in self.models.values() if m.unavailable}

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
            if reason is None and entry["base"] and entry["base"] not in names:
                reason = f"its base {entry['base']!r} is not in the catalog"
            models[entry["name"]] = CatalogModel(
                entry["name"], path, tuple(entry["types"]), entry["vram_gb"], entry["base"],
                reason)
        return cls(models)


def _check_path(path: str | None) -> str | None:
    if path is None:
        return None
    directory = Path(path)
    if not directory.is_dir():
        return f"{path} is not a directory"
    if not any((directory / marker).is_file() for marker in MARKERS):
        return f"{path} has no {' or '.join(MARKERS)}"
    return None
