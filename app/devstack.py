"""`make run`: the whole platform on one machine, from the Procfile.

Starts an embedded Redis when REDIS_URL is unset, then every Procfile process
(web, worker, flower) with the same environment, prints where to go, and on
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from app.embedded_redis import RedisServer

STATE_DIR = Path("var")
STOP_TIMEOUT = 15


def read_procfile(path: Path = Path("Procfile")) -> dict[str, str]:
    processes = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not line.startswith("#"):
            processes[name.strip()] = command.strip()
    return processes


def dev_api_keys() -> str:
    """A tenant key and an operator key, kept in var/ so they survive restarts."""
    path = STATE_DIR / "dev-api-keys"
    if not path.exists():
        STATE_DIR.mkdir(exist_ok=True)
        path.write_text(f"dev-{secrets.token_urlsafe(18)}=dev,op-{secrets.token_urlsafe(18)}=*\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _pump(name: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>7} | {line.decode(errors='replace')}")
        sys.stdout.flush()


class Stack:
    def __init__(self) -> None:
        self.redis: RedisServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if not env.get("REDIS_URL"):
            self.redis = RedisServer(STATE_DIR / "redis").start()
            env["REDIS_URL"] = self.redis.url
        env.setdefault("CHORDLINE_API_KEYS", dev_api_keys())
        env.setdefault("CHORDLINE_TEST_HANDLERS", "1")
        # No GPU here: the Pillow painters answer the image jobs (README: preview).
        env.setdefault("CHORDLINE_PREVIEW_HANDLERS", "1")
        env.setdefault("CHORDLINE_ARTIFACT_DIR", str(STATE_DIR / "artifacts"))
        env.setdefault("PORT", "8000")
        env.setdefault("WEB_BIND", f"127.0.0.1:{env['PORT']}")
        env.setdefault("WEB_CONCURRENCY", "1")
        # A webhook receiver you run beside it (README: webhooks) listens on loopback.
        env.setdefault("CHORDLINE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1,localhost")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, env: dict[str, str]) -> None:
        for name, command in read_procfile().items():
            child = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            self.children[name] = child
            threading.Thread(target=_pump, args=(name, child.stdout), daemon=True).start()

    def wait_healthy(self, url: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.exited():
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if json.load(response)["checks"].get("workers", {}).get("online"):
                        return True
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        return False

    def exited(self) -> str | None:
        return next((n for n, c in self.children.items() if c.poll() is not None), None)

    def stop(self) -> None:
        for child in self.children.values():
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        if self.redis:
            self.redis.stop()


def _signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    stack = Stack()
    # Explicitly: a shell that starts us in the background leaves SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        env = stack.environment()
        stack.start(env)
        url = f"http://{env['WEB_BIND']}"
        if not stack.wait_healthy(url):
            print(f"chordline: the stack did not become healthy ({stack.exited() or 'timeout'})")
            return 1
        tenant_key = env["CHORDLINE_API_KEYS"].split(",")[0].split("=")[0]
        operator_key = next((k.split("=")[0] for k in env["CHORDLINE_API_KEYS"].split(",")
                             if k.endswith("=*")), "an operator key (key=*)")
        print(f"\nChordline is running: {url}\n  API key: {tenant_key}\n"
              f"  Console: {url}/dashboard/ (sign in with {operator_key})\n"
              f"  Redis:   {env['REDIS_URL']}\n"
              f"  Flower:  http://127.0.0.1:{env.get('FLOWER_PORT', '5555')}\n"
              f"  Try:     curl -s -H 'x-api-key: {tenant_key}' -d "
              f"'{{\"type\":\"text-to-image\",\"prompt\":\"a red fox\"}}' {url}/api/jobs/submit\n"
              f"  Events:  {url.replace('http', 'ws', 1)}/ws?api_key={tenant_key}, or\n"
              f"           CHORDLINE_API_KEY={tenant_key} .venv/bin/chordline watch JOB_ID\n"
              "Press Ctrl-C to stop.\n", flush=True)
        while (name := stack.exited()) is None:
            time.sleep(0.5)
        print(f"chordline: process '{name}' exited; stopping everything")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("chordline: stopping…", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
