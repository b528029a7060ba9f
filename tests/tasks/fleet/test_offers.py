"""Routes and offers: a job's needs as one queue, and whether a worker fits it."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tasks.core.names import LABEL_KEY, LABEL_VALUE, MACHINE_ID, MODEL_NAME, SAFE_NAME
from tasks.fleet.offers import Offer, Route, unplaceable

GPU = Offer("m1", gpu_types=frozenset({"simulate"}), cpu_types=frozenset({"echo"}),
            models={"sdxl": frozenset(), "flux": frozenset({"simulate"})},
            labels={"zone": "eu"}, gpu_memory_gb=24.0)
CPU = Offer("m2", cpu_types=frozenset({"echo", "text-to-image"}), labels={"zone": "us"})


def test_queue_names_are_readable_unique_and_free_of_the_priority_separator() -> None:
    route = Route("simulate", 12, "sd1.5", (("zone", "eu"),))
    name = route.queue("chordline")
    assert name.startswith("chordline.simulate.sd1.5.12g.") and ":" not in name
    assert name != Route("simulate", 12, "sd1.5", (("zone", "us"),)).queue("chordline")
    assert Route("echo", 4).queue("chordline") == "chordline.echo._.4g"
    odd = Route("my type:x", 4).queue("q")
    assert ":" not in odd and odd != Route("my type_x", 4).queue("q")
    assert Route.from_dict(route.as_dict()) == route


@pytest.mark.parametrize(("route", "refusal"), [
    (Route("simulate", 24, "sdxl"), None),
    (Route("simulate", 25, "sdxl"), "has 24 GB of GPU memory"),
    (Route("simulate", 8, "sd3"), "does not have model sd3"),
    (Route("simulate", 8, "flux"), None),
    (Route("simulate", 8, "", (("zone", "us"),)), "lacks labels zone=us"),
    (Route("upscale", 8), "does not serve upscale jobs"),
    # a type served without a GPU ignores memory; a named model and labels still bind
    (Route("echo", 500), None),
    (Route("echo", 4, "sd3"), "does not have model sd3"),
])
def test_an_offer_accepts_only_routes_it_can_run(route: Route, refusal: str | None) -> None:
    assert GPU.refusal(route) == refusal


def test_a_model_reserved_for_other_types_does_not_count() -> None:
    offer = Offer("m", gpu_types=frozenset({"text-to-image", "simulate"}),
                  models={"flux": frozenset({"simulate"})}, gpu_memory_gb=80)
    assert offer.refusal(Route("text-to-image", 8, "flux")) == "does not have model flux"


def test_a_draining_offer_accepts_nothing() -> None:
    assert Offer("m", cpu_types=frozenset({"echo"}), draining=True).refusal(
        Route("echo", 4)) == "draining"


@pytest.mark.parametrize(("route", "offers", "reason"), [
    (Route("simulate", 200, "sdxl"), [GPU, CPU], "no online machine has 200 GB of GPU memory"),
    (Route("simulate", 8, "sd3"), [GPU], "no online machine with 8 GB of GPU memory has "
                                         "model sd3"),
    (Route("upscale", 8), [GPU, CPU], "no online machine serves upscale jobs"),
    (Route("echo", 4, labels=(("zone", "ap"),)), [GPU, CPU],
     "no online machine has labels zone=ap"),
    (Route("echo", 4), [], "no machine is online"),
    (Route("simulate", 8, "sdxl"), [CPU, replace(GPU, draining=True)],
     "every online machine that could run it is draining"),
    (Route("text-to-image", 80), [GPU, CPU], None),
    (Route("text-to-image", 8, "sdxl"), [GPU, CPU], "no online machine with 8 GB of GPU "
                                                    "memory has model sdxl"),
    (Route("simulate", 20, "sdxl"), [CPU, GPU], None),
])
def test_the_reason_a_job_waits_names_what_is_missing(
        route: Route, offers: list[Offer], reason: str | None) -> None:
    assert unplaceable(route, offers) == reason


@pytest.mark.parametrize("pattern", [SAFE_NAME, MODEL_NAME, LABEL_KEY, LABEL_VALUE, MACHINE_ID])
def test_a_name_with_a_trailing_newline_is_refused(pattern: re.Pattern[str]) -> None:
    """`$` would let `"eu\\n"` through (it matches before a final newline); `\\Z` does not."""
    assert pattern.match("eu1") and not pattern.match("eu1\n")
