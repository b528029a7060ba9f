"""The worker entry point: `celery -A workers.bootstrap worker` (one per GPU: workers/node.py).

It builds the Flask app (and with it the Celery app and the services) from the
environment, works out which node and GPU this worker is (tasks/node.py), then
connects route consumption (workers/routing.py) and the signal-to-event bridge
(workers/signals.py). A setting that does not add up stops the worker here.
"""

from __future__ import annotations

from typing import Any

from celery.signals import after_setup_task_logger

from app import create_app
from tasks.catalog import Catalog
from tasks.models import ModelCache
from tasks.node import NodeProfile
from tasks.runner import CorrelationFilter
from tasks.services import Services
from tasks.settings import ConfigError
from workers import routing
from workers.gpu import detect
from workers.signals import SignalBridge


def node_profile(services: Services) -> NodeProfile:
    """This worker's node and GPU, from detection (or CHORDLINE_GPUS) and the settings."""
    settings = services.settings
    found = detect(settings.gpus)
    index = settings.gpu_index
    if index is None and len(found.gpus) > 1:
        raise ConfigError(f"this node has {len(found.gpus)} GPUs: start it with `python -m "
                          "workers.node` (one worker per GPU), or set CHORDLINE_GPU_INDEX")
    if index is not None and index >= len(found.gpus):
        raise ConfigError(f"CHORDLINE_GPU_INDEX is {index}, but this node has "
                          f"{len(found.gpus)} GPU(s)")
    registry = services.registry
    return NodeProfile.build(
        settings.machine_id, found.gpus, 0 if index is None and found.gpus else index,
        settings.machine_labels, Catalog.load(settings.models_file),
        {t: registry.get(t).uses_gpu for t in registry.types()}, detected_by=found.source,
        driver_version=found.driver_version, cuda_version=found.cuda_version)


flask_app = create_app()
celery = flask_app.extensions["celery"]
services: Services = flask_app.extensions["chordline"]
bridge = SignalBridge(flask_app)
services.node = node_profile(services)
if services.node.gpu is not None:
    services.models = ModelCache(
        services.node.gpu.memory_gb, on_load=services.routes.record_load,
        publish=lambda models: services.machines.publish_models(bridge.hostname, models))
if services.node.gpu is None and services.settings.broker_is_redis:
    # A CPU worker's routes are all alike: its transport takes them in turns.
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options,
                                            "queue_order_strategy": "round_robin"}
routing.install(celery, services, services.node)
bridge.connect()


@after_setup_task_logger.connect
def on_after_setup_task_logger(sender: Any = None, logger: Any = None, **extra: Any) -> None:
    for handler in getattr(logger, "handlers", []):
        handler.addFilter(CorrelationFilter())
