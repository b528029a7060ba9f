"""The artifact store over a real Redis: what a step's compensation deletes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from PIL import Image

from tasks import keys
from tasks.artifacts import SWEEP_MARKER, ArtifactStore
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


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_sweep_deletes_only_files_whose_records_are_gone(client: redis.Redis,
                                                             tmp_path: Path) -> None:
    store = ArtifactStore(client, str(tmp_path), retention=60, max_side=512)
    kept = store.save_image(Image.new("RGB", (8, 8)), "t1")
    expired = store.save_image(Image.new("RGB", (8, 8)), "t1")
    fresh_orphan = store.save_image(Image.new("RGB", (8, 8)), "t1")
    for gone in (expired, fresh_orphan):
        client.delete(keys.artifact(gone.id))  # as if the record had expired
    crashed = tmp_path / "ab" / "crashed.part"
    crashed.parent.mkdir(exist_ok=True)
    crashed.write_bytes(b"half a png")
    for path in (store.path(kept), store.path(expired), crashed):
        _age(path, 7200)
    # One pass removes the old orphan and the crashed write, and nothing younger
    assert store.sweep(every=600, grace=3600) == 2
    assert store.path(kept).exists() and store.path(fresh_orphan).exists()
    assert not store.path(expired).exists() and not crashed.exists()
    # Another machine sharing the directory waits its turn
    _age(store.path(fresh_orphan), 7200)
    assert ArtifactStore(client, str(tmp_path), 60, 512).sweep(every=600, grace=3600) == 0
    assert store.path(fresh_orphan).exists()
    _age(tmp_path / SWEEP_MARKER, 601)
    assert store.sweep(every=600, grace=3600) == 1


def test_a_tenants_stored_bytes_count_up_and_down(client: redis.Redis, tmp_path: Path) -> None:
    store = ArtifactStore(client, str(tmp_path), retention=60, max_side=512)
    image = Image.new("RGB", (32, 32), "red")
    made = [store.save_image(image, "t1", job_id="j1") for _ in range(2)]
    store.save_image(image, "t2")
    size = (tmp_path / made[0].path).stat().st_size

    def stored(tenant: str) -> int:
        return sum(int(v) for v in client.hvals(keys.quota_storage(tenant)))

    assert (stored("t1"), stored("t2")) == (2 * size, size)
    store.delete_job_artifacts("j1", only=[made[0].id])
    assert stored("t1") == size
    store.delete_job_artifacts("j1")
    assert not client.exists(keys.quota_storage("t1"))  # an empty bucket is dropped
