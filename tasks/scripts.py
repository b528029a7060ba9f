"""Lua scripts, loaded lazily so that importing Chordline touches no files."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from tasks import metrics
from tasks.events import lua_prelude


@cache
def _source(name: str) -> str:
    lua = resources.files("tasks") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


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
