"""GPU detection and live readings: NVML first, then torch, else a CPU-only node.

`CHORDLINE_GPUS` replaces detection (declared GPUs: where no driver answers, and
for tests and benchmarks). NVML (the `nvidia-ml-py` package) is read in this
process: it creates no CUDA context, so pool processes forked later can still
use CUDA. torch is only asked in a child process, for the same reason. No NVML
library or driver is the ordinary case on a CPU-only node, not an error.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any

from tasks.core.settings import DeclaredGpus
from tasks.fleet.offers import Gpu

log = logging.getLogger(__name__)
MIB = 1024 * 1024
TORCH_QUERY = """
import json, torch
gpus = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"name": p.name, "memory": p.total_memory, "uuid": str(getattr(p, "uuid", ""))})
print(json.dumps({"gpus": gpus, "cuda": torch.version.cuda or ""}))
"""


@dataclass(frozen=True)
class Detected:
    gpus: tuple[Gpu, ...]
    source: str
    driver_version: str = ""
    cuda_version: str = ""


def detect(declared: DeclaredGpus | None) -> Detected:
    """The node's GPUs: as declared, else as NVML or torch see them, else none."""
    if declared is not None:
        gpus = tuple(Gpu(i, name, round(gb * 1024)) for i, (name, gb) in enumerate(declared))
        return Detected(gpus, "declared")
    return _nvml() or _torch() or Detected((), "none")


def _nvml() -> Detected | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no library, no driver: no NVML here
        log.debug("NVML not available: %s", exc)
        return None
    try:
        gpus = tuple(_read(pynvml, pynvml.nvmlDeviceGetHandleByIndex(i), i)
                     for i in range(pynvml.nvmlDeviceGetCount()))
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        return Detected(gpus, "nvml", _text(pynvml.nvmlSystemGetDriverVersion()),
                        f"{cuda // 1000}.{cuda % 1000 // 10}")
    except Exception:
        log.warning("NVML answered, but reading the GPUs failed", exc_info=True)
        return None
    finally:
        pynvml.nvmlShutdown()


def _read(nvml: Any, handle: Any, index: int) -> Gpu:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return Gpu(index, _text(nvml.nvmlDeviceGetName(handle)), memory.total // MIB,
               _text(nvml.nvmlDeviceGetUUID(handle)), memory.free // MIB,
               int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
               int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _torch() -> Detected | None:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        out = subprocess.run([sys.executable, "-c", TORCH_QUERY], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        found = json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        log.warning("asking torch for GPUs failed", exc_info=True)
        return None
    gpus = tuple(Gpu(i, g["name"], g["memory"] // MIB, g["uuid"])
                 for i, g in enumerate(found["gpus"]))
    return Detected(gpus, "torch", cuda_version=found["cuda"]) if gpus else None


class Sampler:
    """Live readings of one GPU (free memory, utilisation, temperature) where NVML is
    there; elsewhere the GPU as detected, and its readings are accounted instead."""

    def __init__(self, gpu: Gpu, source: str) -> None:
        self._gpu = gpu
        self._nvml: Any = None
        if source == "nvml":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:
                log.warning("NVML is gone: GPU readings stop", exc_info=True)

    def sample(self) -> Gpu:
        if self._nvml is None:
            return self._gpu
        try:
            handle = (self._nvml.nvmlDeviceGetHandleByUUID(self._gpu.uuid) if self._gpu.uuid
                      else self._nvml.nvmlDeviceGetHandleByIndex(self._gpu.index))
            return replace(_read(self._nvml, handle, self._gpu.index), index=self._gpu.index)
        except Exception:
            log.warning("reading GPU %d failed", self._gpu.index, exc_info=True)
            return self._gpu
