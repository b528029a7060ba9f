"""Uploading inputs and chaining image jobs through artifacts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support import Api


def upload(api: Api, size: tuple[int, int] = (96, 64)) -> dict[str, object]:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="JPEG")
    response = api.request("POST", "/api/artifacts", files={"file": ("in.jpg", buffer.getvalue())})
    assert response.status_code == 201, response.text
    artifact: dict[str, object] = response.json()["artifact"]
    return artifact


def output_size(api: Api, job: dict[str, object]) -> tuple[int, int]:
    artifact = job["result"]["artifacts"][0]  # type: ignore[index]
    image = Image.open(io.BytesIO(api.request("GET", artifact["url"]).content))
    return image.size


def test_upscale_doubles_an_uploaded_image(api: Api) -> None:
    source = upload(api)
    job = api.wait(api.submit_ok({"type": "upscale", "parameters": {"image_url": source["url"]}}))
    assert job["status"] == "completed", job["error"]
    assert output_size(api, job) == (192, 128)
    assert job["requirements"]["gpu_memory"] == 12


@pytest.mark.parametrize("job_type", ["image-to-image", "controlnet"])
def test_image_transforms_keep_the_input_size(api: Api, job_type: str) -> None:
    source = upload(api)
    job = api.wait(api.submit_ok({"type": job_type, "prompt": "make it blue",
                                  "parameters": {"image_url": source["url"], "steps": 3}}))
    assert job["status"] == "completed", job["error"]
    assert output_size(api, job) == (96, 64)


def test_an_upscale_beyond_the_output_limit_is_refused_at_submit(api: Api) -> None:
    source = upload(api, (2048, 64))
    response = api.submit({"type": "upscale",
                           "parameters": {"image_url": source["url"], "scale_factor": 4}})
    assert response.status_code == 400
    assert "at most 4096 pixels" in response.json()["error"]["message"]


@pytest.mark.parametrize("data", [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_bad_uploads_are_400s(api: Api, data: bytes) -> None:
    response = api.request("POST", "/api/artifacts", data=data,
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_UPLOAD"


def test_an_unknown_artifact_is_a_404(api: Api) -> None:
    response = api.request("GET", "/api/artifacts/" + "f" * 32)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ARTIFACT_NOT_FOUND"
