"""The artifact store over a real Redis: what a step's compensation deletes."""

from __future__ import annotations

from pathlib import Path

import redis
from PIL import Image

from tasks.artifacts import ArtifactStore
from tasks.handlers.base import CompensationContext
from tasks.handlers.preview import PreviewTextToImage as TextToImage


def test_the_default_compensation_deletes_a_steps_images_once(
        client: redis.Redis, tmp_path: Path) -> None:
    # Given a step that saved two images, and another step's image
    artifacts = ArtifactStore(client, str(tmp_path), retention=60, max_side=2048)
    image = Image.new("RGB", (8, 8))
    mine = [artifacts.save_image(image, "t1", "job-1") for _ in range(2)]
    other = artifacts.save_image(image, "t1", "job-2")
    ctx = CompensationContext(job_id="job-1", tenant="t1", parameters={}, result={}, attempt=1,
                              correlation_id="c", artifacts=artifacts)
    # When it is compensated, twice (a retried attempt)
    assert TextToImage().compensate(ctx) == {"deleted_artifacts": 2}
    assert TextToImage().compensate(ctx) == {"deleted_artifacts": 0}
    # Then its images are gone, files and records, and the other step's remains
    assert all(artifacts.get(a.id) is None for a in mine)
    assert not any(artifacts.path(a).exists() for a in mine)
    assert artifacts.get(other.id) is not None and artifacts.path(other).exists()
