"""What a workflow step takes from its dependencies: its `when` conditions and input image.

Results pass through the job store, not through canvas arguments: the step reads
its dependencies' outcomes when it starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis

from tasks.core import keys
from tasks.core.errors import JobError
from tasks.handlers.registry import HandlerRegistry
from tasks.jobs.runner import RunPlan
from tasks.jobs.store import Job
from tasks.workflows.conditions import Condition, first_unmet


class StepInputs:
    """Resolves a step's conditions and input image from its dependencies' outcomes."""

    def __init__(self, client: redis.Redis, registry: HandlerRegistry,
                 max_output_side: int) -> None:
        self._redis = client
        self._registry = registry
        self._max_output_side = max_output_side

    def prepare(self, job: Job) -> RunPlan:
        conditions = [Condition.from_dict(c) for c in job.get("when") or []]
        takes_input = job.get("input_from_deps") and not job["parameters"].get("image_url")
        if not job.get("workflow_id") or not job.get("depends_on") or not (
                conditions or takes_input):
            return RunPlan(job["parameters"])  # nothing to read of its dependencies
        outcomes = self._outcomes(job)
        unmet = first_unmet(conditions, outcomes)
        if unmet is not None:
            return RunPlan(job["parameters"], f"Condition not met: {unmet.describe()}")
        parameters = dict(job["parameters"])
        if takes_input:
            self._take_input(job, parameters, outcomes)
        return RunPlan(parameters)

    def _outcomes(self, job: Job) -> dict[int, dict[str, Any]]:
        """`{step index: {status, result}}` for the step's dependencies, in one round trip."""
        indices: list[int] = job["depends_on"]
        ids = job["dependency_ids"].split("|")
        pipe = self._redis.pipeline(transaction=False)
        for dep_id in ids:
            pipe.hmget(keys.job(dep_id), ["status", "result"])
        outcomes: dict[int, dict[str, Any]] = {}
        for index, (status, result) in zip(indices, cast(list[Any], pipe.execute()), strict=True):
            outcomes[index] = {"status": status, "result": json.loads(result) if result else {}}
        return outcomes

    def _take_input(self, job: Job, parameters: dict[str, Any],
                    outcomes: Mapping[int, Mapping[str, Any]]) -> None:
        """Use the first image a dependency produced, in `depends_on` order."""
        for index in job["depends_on"]:
            artifacts = outcomes[index]["result"].get("artifacts") or []
            if artifacts:
                image = artifacts[0]
                parameters["image_url"] = image["url"]
                self._check_output(job, parameters, (image["width"], image["height"]))
                return
        raise JobError("INPUT_NOT_FOUND",
                       f"step {job['step_index']} takes an image, and none of its "
                       f"dependencies {job['depends_on']} produced one")

    def _check_output(self, job: Job, parameters: Mapping[str, Any],
                      size: tuple[int, int]) -> None:
        width, height = self._registry.get(job["type"]).input_size(parameters, size)
        if max(width, height) > self._max_output_side:
            raise JobError("OUTPUT_TOO_LARGE",
                           f"the output would be {width}x{height}; sides must be at most "
                           f"{self._max_output_side} pixels")
