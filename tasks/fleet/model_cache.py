"""The models one GPU slot keeps warm: an LRU cache bounded by the GPU's memory.

A model is loaded once and kept; loading one that does not fit evicts the least
recently used until it does. Every change is published to the worker's record
(loading, then loaded; evicted), because placement (tasks/fleet/placement.py) sends a
model's jobs where it is warm and treats a model being loaded as warm already.
Each worker process has its own cache: a GPU slot is one worker with one pool
process, so the cache lives exactly as long as the process that holds the GPU.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.core.errors import InvalidInput

log = logging.getLogger(__name__)

# What the cache tells the world: the models it holds, most recently used first.
Publish = Callable[[list[dict[str, Any]]], None]


class ModelTooLarge(InvalidInput):
    """A model bigger than the whole GPU."""

    default_code = "MODEL_TOO_LARGE"


@dataclass(frozen=True)
class Acquired:
    """A model ready to use; `load_seconds` is 0 when it was already warm."""

    name: str
    value: Any
    loaded: bool
    load_seconds: float


@dataclass
class _Entry:
    value: Any
    vram_gb: float


class ModelCache:
    def __init__(self, capacity_gb: float, publish: Publish,
                 on_load: Callable[[str, float], None] | None = None,
                 release: Callable[[], None] | None = None,
                 publish_broken: Callable[[dict[str, str]], None] | None = None) -> None:
        """`release` gives dropped models' memory back (torch's allocator cache);
        `publish_broken` tells the node which models failed to load here."""
        self.capacity_gb = capacity_gb
        self._publish = publish
        self._on_load = on_load
        self._release = release
        self._publish_broken = publish_broken
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._broken: dict[str, str] = {}
        # Seconds spent loading, ever: what a job's run time includes besides its work.
        self.load_seconds = 0.0

    def acquire(self, name: str, vram_gb: float, load: Callable[[], Any]) -> Acquired:
        """The model `name`, loading it (and evicting others to make room) if needed."""
        entry = self._entries.get(name)
        if entry is not None:
            if next(reversed(self._entries)) != name:  # the order changed: say so
                self._entries.move_to_end(name)
                self._announce()
            return Acquired(name, entry.value, False, 0.0)
        if vram_gb > self.capacity_gb + 1e-9:
            raise ModelTooLarge(f"model {name} needs {vram_gb:g} GB; the GPU has "
                                f"{self.capacity_gb:g} GB")
        self._make_room(vram_gb)
        self._announce(loading=(name, vram_gb))
        started = time.monotonic()
        try:
            value = load()
        except BaseException:
            self._announce()
            raise
        seconds = time.monotonic() - started
        self.load_seconds += seconds
        self._entries[name] = _Entry(value, vram_gb)
        self._announce()
        log.info("model %s loaded in %.2f s (%g GB)", name, seconds, vram_gb)
        if self._on_load is not None:
            self._on_load(name, seconds)
        return Acquired(name, value, True, seconds)

    def evict(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            log.info("model %s evicted", name)
            if self._release is not None:
                self._release()

    def clear(self) -> None:
        """Drop every model (a new pool process, or memory to recover after an OOM)."""
        self._entries.clear()
        if self._release is not None:
            self._release()
        self._announce()

    def mark_broken(self, name: str, reason: str) -> None:
        """A model that failed to load in this process: the node withdraws it."""
        log.error("model %s is broken here: %s", name, reason)
        self._broken[name] = reason
        if self._publish_broken is not None:
            self._publish_broken(dict(self._broken))

    def names(self) -> list[str]:
        """Most recently used first."""
        return list(reversed(self._entries))

    def _make_room(self, vram_gb: float) -> None:
        while self._entries and self._used() + vram_gb > self.capacity_gb + 1e-9:
            self.evict(next(iter(self._entries)))

    def _used(self) -> float:
        return sum(e.vram_gb for e in self._entries.values())

    def _announce(self, loading: tuple[str, float] | None = None) -> None:
        models = [{"name": n, "vram_gb": self._entries[n].vram_gb, "state": "loaded"}
                  for n in self.names()]
        if loading is not None:
            models.insert(0, {"name": loading[0], "vram_gb": loading[1], "state": "loading"})
        try:
            self._publish(models)
        except Exception:
            log.warning("could not publish the resident models", exc_info=True)
