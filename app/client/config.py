"""Where the command-line client finds the API.

The server's settings are tasks/core/settings.py; these are the client's alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientSettings:
    """Where the command-line client finds the API, and with which key."""

    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        environ = os.environ if environ is None else environ
        return cls(environ.get("CHORDLINE_API_URL") or cls.api_url,
                   environ.get("CHORDLINE_API_KEY") or None)
