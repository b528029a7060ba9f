"""Lua scripts, loaded lazily so that importing Chordline touches no files."""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

import redis
from redis.commands.core import Script

from tasks.core import metrics
from tasks.core.events import lua_prelude

# The rooms whose `lua/` folders hold scripts, each beside the module that calls it.
ROOMS = ("jobs", "workflows", "fleet", "storage", "webhooks")


@cache
def _prelude() -> str:
    """The helpers every script shares, in parts by subject (tasks/core/lua/prelude/)."""
    parts = sorted((entry for entry in (resources.files("tasks.core") / "lua" / "prelude")
                    .iterdir() if entry.name.endswith(".lua")), key=lambda entry: entry.name)
    return "\n".join(part.read_text() for part in parts)


@cache
def _index() -> dict[str, Traversable]:
    """Every script by name (names are unique across the rooms)."""
    found: dict[str, Traversable] = {}
    for room in ROOMS:
        for entry in (resources.files(f"tasks.{room}") / "lua").iterdir():
            if entry.name.endswith(".lua"):
                name = entry.name.removesuffix(".lua")
                assert name not in found, f"two scripts named {name}"
                found[name] = entry
    return found


@cache
def _source(name: str) -> str:
    try:
        script = _index()[name]
    except KeyError:
        raise AttributeError(f"no Lua script named {name} in tasks/*/lua/") from None
    return _prelude() + "\n" + script.read_text()


class Scripts:
    """The registered scripts of one Redis client (EVALSHA, reloaded on NOSCRIPT)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._prelude = lua_prelude(client) + metrics.lua_prelude()
        self._loaded: dict[str, Script] = {}

    def __getattr__(self, name: str) -> Script:
        if name.startswith("_"):
            raise AttributeError(name)
        script = self._loaded.get(name)
        if script is None:
            source = self._prelude + _source(name)
            script = self._loaded[name] = self._client.register_script(source)
        return script
