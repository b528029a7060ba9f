"""Job handlers: one per job type, from a registry that plugins extend.

A plugin (a module named in CHORDLINE_HANDLER_MODULES) imports only what is declared
here: this is the public API, kept stable across releases, whatever room each name
is defined in.
"""

from tasks.core.errors import JobError, LeaseLost, StepStopped
from tasks.fleet.offers import Gpu, Requirements
from tasks.handlers.base import CompensationContext, Handler, JobContext, Limits
from tasks.handlers.registry import HandlerRegistry, UnknownJobType

__all__ = [
    "CompensationContext",
    "Gpu",
    "Handler",
    "HandlerRegistry",
    "JobContext",
    "JobError",
    "LeaseLost",
    "Limits",
    "Requirements",
    "StepStopped",
    "UnknownJobType",
]
