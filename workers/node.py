"""`python -m workers.node`: run one node: a Celery worker per GPU, or one CPU worker.

A GPU is a slot of its own: one worker (`<name>-gpu<i>@<host>`, one pool
process) pinned to it with `CUDA_VISIBLE_DEVICES` and `CHORDLINE_GPU_INDEX`, so
it runs one job at a time, keeps its own models warm, and consumes the routes
that GPU can run (workers/routing.py). A node with one GPU, or none, simply
becomes that worker (exec); with several, this process starts them, restarts one
that dies, and passes shutdown signals on. Options after `--` go to every
`celery worker`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.core.settings import Settings
from tasks.fleet.offers import Gpu
from workers.gpu import detect

log = logging.getLogger("chordline.node")
PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_MAX = 30.0


def worker_command(hostname: str, concurrency: int, extra: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.bootstrap", "worker",
            f"--hostname={hostname}", f"--concurrency={concurrency}", *extra]


def gpu_environment(gpu: Gpu, source: str) -> dict[str, str]:
    """Pin a worker to one GPU: CUDA sees only it (by UUID where the driver told us)."""
    return {"CHORDLINE_GPU_INDEX": str(gpu.index),
            "CUDA_VISIBLE_DEVICES": gpu.uuid if source == "nvml" and gpu.uuid else str(gpu.index)}


@dataclass
class GpuWorker:
    hostname: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    backoff: float = 1.0
    started: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.hostname, self.process.pid)


def _die_with_parent() -> None:
    """A GPU worker must not outlive its node process (Linux: a parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Keeps one worker per GPU running until told to stop."""

    def __init__(self, slots: list[GpuWorker]) -> None:
        self.slots = slots
        self._stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._forward)
        for slot in self.slots:
            slot.start()
        while not self._stopping:
            time.sleep(0.5)
            for slot in self.slots:
                self._watch(slot)
        for slot in self.slots:
            if slot.process is not None:
                slot.process.wait()
        return 0

    def _watch(self, slot: GpuWorker) -> None:
        assert slot.process is not None
        code = slot.process.poll()
        if code is None or self._stopping:
            return
        if time.monotonic() - slot.started > 60:
            slot.backoff = 1.0
        log.error("%s exited (%s); restarting in %.0f s", slot.hostname, code, slot.backoff)
        time.sleep(slot.backoff)
        slot.backoff = min(slot.backoff * 2, RESTART_BACKOFF_MAX)
        slot.start()

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.node", description=__doc__)
    parser.add_argument("--name", default="worker", help="worker name prefix")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="jobs at a time on a node without GPUs (a GPU runs one)")
    parser.add_argument("celery_args", nargs="*", help="options for `celery worker` (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/node] %(message)s")
    settings = Settings.from_env()
    found = detect(settings.gpus)
    env = dict(os.environ)
    if settings.gpu_index is not None or len(found.gpus) <= 1:
        hostname = f"{args.name}@%h" if not found.gpus else f"{args.name}-gpu0@%h"
        concurrency = 1 if found.gpus else args.concurrency
        if found.gpus and settings.gpu_index is None:
            env |= gpu_environment(found.gpus[0], found.source)
        command = worker_command(hostname, concurrency, args.celery_args)
        os.execve(command[0], command, env)
    log.info("node %s: %d GPUs (%s): one worker each", settings.machine_id, len(found.gpus),
             found.source)
    slots = []
    for gpu in found.gpus:
        hostname = f"{args.name}-gpu{gpu.index}@%h"
        slots.append(GpuWorker(hostname, worker_command(hostname, 1, args.celery_args),
                               env | gpu_environment(gpu, found.source)))
    return Supervisor(slots).run()


if __name__ == "__main__":
    sys.exit(main())
