"""The handler registry: built-ins, test handlers, and plugins.

A plugin is a module with `register(registry)`, found through the
`chordline.handlers` entry-point group or named in CHORDLINE_HANDLER_MODULES.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from marshmallow import Schema

from tasks.core.errors import ChordlineError
from tasks.handlers.base import Handler, Limits

ENTRY_POINT_GROUP = "chordline.handlers"


class UnknownJobType(ChordlineError, KeyError):
    default_code = "UNKNOWN_JOB_TYPE"


class HandlerRegistry:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._handlers: dict[str, Handler] = {}
        self._schemas: dict[str, Schema] = {}

    def register(self, handler: Handler) -> None:
        """Add a handler; a later registration of the same type replaces it (plugins win)."""
        self._handlers[handler.type] = handler
        self._schemas[handler.type] = handler.parameters(self.limits)

    def get(self, job_type: str) -> Handler:
        try:
            return self._handlers[job_type]
        except KeyError:
            raise UnknownJobType(job_type) from None

    def unregister(self, job_type: str) -> None:
        self._handlers.pop(job_type, None)
        self._schemas.pop(job_type, None)

    def schema(self, job_type: str) -> Schema:
        return self._schemas[job_type]

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers


def build_registry(limits: Limits, *, test_handlers: bool,
                   modules: Iterable[str] = ()) -> HandlerRegistry:
    """Every type this deployment knows (the API validates with these), with the
    built-in backends a worker may then narrow down with `serve`."""
    from tasks.handlers.preview import BUILTIN
    from tasks.handlers.testing import TEST_HANDLERS

    registry = HandlerRegistry(limits)
    for cls in BUILTIN + (TEST_HANDLERS if test_handlers else ()):
        registry.register(cls())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()(registry)
    for name in modules:
        importlib.import_module(name).register(registry)
    return registry


def serve(registry: HandlerRegistry, *, preview: bool, diffusion: Iterable[str]) -> None:
    """Narrow a worker's registry to what it runs: diffusers for the `diffusion` types (a
    GPU slot whose catalog has models for them), the preview painters elsewhere only with
    `preview`. A type a plugin took over stays the plugin's."""
    from tasks.handlers.diffusion import DIFFUSERS
    from tasks.handlers.preview import BUILTIN, PREVIEW

    models = set(diffusion)
    for job_type in registry.types():
        current = type(registry.get(job_type))
        if current not in BUILTIN:
            continue
        if job_type in models:
            registry.register(DIFFUSERS[job_type]())
        elif current in PREVIEW and not preview:
            registry.unregister(job_type)
