"""Handlers, their parameter schemas and requirements, without Redis or a worker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from tasks.handlers import Limits, Requirements
from tasks.handlers.preview import LanczosUpscale as Upscale
from tasks.handlers.preview import PreviewTextToImage as TextToImage
from tasks.handlers.registry import build_registry
from tasks.handlers.render import paint
from tasks.jobs.message import broker_priority

LIMITS = Limits()


def test_test_handlers_exist_only_when_enabled() -> None:
    assert "echo" not in build_registry(LIMITS, test_handlers=False).types()
    enabled = build_registry(LIMITS, test_handlers=True)
    assert {"echo", "sleep", "fail", "flaky"} <= set(enabled.types())


def test_a_plugin_module_can_add_a_handler() -> None:
    registry = build_registry(LIMITS, test_handlers=False, modules=["tests.tasks.plugin"])
    assert "watermark" in registry


def test_painting_is_deterministic_per_prompt_and_seed() -> None:
    first = paint("a cat", 3, 64, 48, 4).tobytes()
    assert first == paint("a cat", 3, 64, 48, 4).tobytes()
    assert first != paint("a cat", 4, 64, 48, 4).tobytes()
    assert first != paint("a dog", 3, 64, 48, 4).tobytes()


def test_painting_reports_progress_up_to_100() -> None:
    seen: list[float] = []
    paint("x", 1, 32, 32, 5, seen.append)
    assert seen == sorted(seen) and seen[-1] == 100


@pytest.mark.parametrize(("params", "memory"), [
    ({}, 8), ({"high_quality": True}, 12), ({"batch_size": 3}, 12),
    ({"high_quality": True, "batch_size": 2}, 14),
])
def test_requirements_follow_the_seeds_analysis(params: dict[str, object], memory: int) -> None:
    assert TextToImage().requirements(params).gpu_memory == memory


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["width", "height", "seed", "steps", "batch_size",
                                        "guidance_scale", "high_quality", "bogus"]),
                       st.one_of(st.integers(-10, 10_000), st.floats(allow_nan=True),
                                 st.text(max_size=5), st.booleans(), st.none())))
def test_text_to_image_parameters_are_valid_or_refused_never_crash(params: dict) -> None:
    schema = TextToImage().parameters(LIMITS)
    try:
        loaded = schema.load(params)
    except ValidationError as exc:
        assert exc.messages
        return
    assert 64 <= loaded["width"] <= LIMITS.max_image_side and loaded["width"] % 8 == 0
    assert 64 <= loaded["height"] <= LIMITS.max_image_side and loaded["height"] % 8 == 0
    assert 1 <= loaded["batch_size"] <= 8 and 0 <= loaded["seed"] < 2**32


@given(st.integers(0, 100), st.integers(0, 100))
def test_higher_priority_is_served_first_on_both_brokers(a: int, b: int) -> None:
    on_redis = [broker_priority(p, broker_is_redis=True) for p in (a, b)]
    on_amqp = [broker_priority(p, broker_is_redis=False) for p in (a, b)]
    if a > b:
        assert on_redis[0] <= on_redis[1] and on_amqp[0] >= on_amqp[1]
    assert 0 <= broker_priority(a, broker_is_redis=True) <= 9


def test_upscale_output_size_follows_the_factor() -> None:
    handler = Upscale()
    params = handler.parameters(LIMITS).load({"image_url": "/api/artifacts/" + "a" * 32,
                                              "scale_factor": 2.5})
    assert handler.input_size(params, (100, 40)) == (250, 100)


def test_a_submission_raises_requirements_and_never_contradicts_the_handlers_model() -> None:
    own = Requirements(10, "simulate", ["simulate"], model="a")
    raised = own.raised_by({"gpu_memory": 24, "labels": {"zone": "eu"}})
    assert (raised.gpu_memory, raised.model, dict(raised.labels)) == (24, "a", {"zone": "eu"})
    assert own.raised_by({"gpu_memory": 2}).gpu_memory == 10
    with pytest.raises(ValueError, match="names model b, but the job runs model a"):
        own.raised_by({"model": "b"})
    # a known model's memory replaces the type's estimate; quality and batches still add
    assert Requirements(12, "sd", ["text-to-image"]).for_model(8, 2.5).gpu_memory == 7
