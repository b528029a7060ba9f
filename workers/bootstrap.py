"""The worker entry point: `celery -A workers.bootstrap worker` (one per GPU: workers/node.py).

It builds the Flask app (and with it the Celery app and the services) from the
environment, works out which node and GPU this worker is (tasks/fleet/profile.py) and what it
runs there (diffusers for the types its catalog has models for, on a GPU; the preview
painters only when told to), then connects route consumption (workers/routing.py)
and the signal-to-event bridge (workers/signals.py). A setting that does not add up
stops the worker here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from celery.signals import after_setup_task_logger

from app import create_app
from tasks.core.errors import ConfigError
from tasks.fleet.catalog import Catalog
from tasks.fleet.model_cache import ModelCache
from tasks.fleet.profile import DIFFUSION_TYPES, NodeProfile
from tasks.handlers.registry import serve
from tasks.jobs.runner import CorrelationFilter
from tasks.services import Services
from workers import qos, routing
from workers.gpu import Detected, detect
from workers.signals import SignalBridge


def gpu_index(services: Services, found: Detected) -> int | None:
    """The GPU this worker serves: CHORDLINE_GPU_INDEX, or the node's only one."""
    index = services.settings.gpu_index
    if index is None and len(found.gpus) > 1:
        raise ConfigError(f"this node has {len(found.gpus)} GPUs: start it with `python -m "
                          "workers.node` (one worker per GPU), or set CHORDLINE_GPU_INDEX")
    if index is not None and index >= len(found.gpus):
        raise ConfigError(f"CHORDLINE_GPU_INDEX is {index}, but this node has "
                          f"{len(found.gpus)} GPU(s)")
    return 0 if index is None and found.gpus else index


def node_profile(services: Services) -> NodeProfile:
    """This worker's node and GPU, with its registry narrowed to what it runs."""
    settings = services.settings
    found = detect(settings.gpus)
    index = gpu_index(services, found)
    catalog = Catalog.load(settings.models_file)
    diffusion = [t for t in sorted(DIFFUSION_TYPES) if catalog.default_for(t)] if (
        index is not None and importlib.util.find_spec("diffusers")) else []
    registry = services.registry
    serve(registry, preview=settings.preview_handlers, diffusion=diffusion)
    return NodeProfile.build(
        settings.machine_id, found.gpus, index, settings.machine_labels, catalog,
        {t: registry.get(t).uses_gpu for t in registry.types()}, detected_by=found.source,
        driver_version=found.driver_version, cuda_version=found.cuda_version)


def model_cache(services: Services, bridge: SignalBridge) -> ModelCache | None:
    """The models this worker's GPU keeps warm (none on a CPU worker)."""
    node = services.node
    if node is None or node.gpu is None:
        return None
    release: Callable[[], None] | None = None
    if node.serves_diffusion:
        from tasks.fleet import pipelines

        # Imported once here, before the pool forks (no CUDA context yet): each pool
        # process, a replacement too, starts at once, and no job waits for the import.
        pipelines.preload()
        release = pipelines.release
    machines = services.machines
    return ModelCache(
        node.gpu.memory_gb, on_load=services.routes.record_load, release=release,
        publish=lambda models: machines.publish_models(bridge.hostname, models),
        publish_broken=lambda broken: machines.publish_broken(bridge.hostname, broken))


flask_app = create_app()
celery = flask_app.extensions["celery"]
services: Services = flask_app.extensions["chordline"]
bridge = SignalBridge(flask_app)
services.node = node_profile(services)
services.models = model_cache(services, bridge)
if services.node.gpu is None and services.settings.broker_is_redis:
    # A CPU worker's routes are all alike: its transport takes them in turns.
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options,
                                            "queue_order_strategy": "round_robin"}
routing.install(celery, services, services.node)
qos.install(celery, services.reservations)
bridge.connect()


@after_setup_task_logger.connect
def on_after_setup_task_logger(sender: Any = None, logger: Any = None, **extra: Any) -> None:
    for handler in getattr(logger, "handlers", []):
        handler.addFilter(CorrelationFilter())
