"""The artifact store over a real Redis: what a step's compensation deletes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from PIL import Image

from tasks.core import keys
from tasks.core.clock import now_ms
from tasks.handlers.base import CompensationContext
from tasks.handlers.preview import PreviewTextToImage as TextToImage
from tasks.storage.artifacts import SWEEP_MARKER, ArtifactStore, expiry_hour


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


def test_a_file_lies_in_the_folder_of_the_hour_its_record_expires_in(
        client: redis.Redis, tmp_path: Path) -> None:
    store = ArtifactStore(client, str(tmp_path), retention=7200, max_side=512)
    saved = store.save_image(Image.new("RGB", (8, 8)), "t1")
    hour = int(saved.path.split("/")[0])
    assert hour == expiry_hour(7200)
    assert hour * 3600 <= time.time() + client.ttl(keys.artifact(saved.id)) < (hour + 1) * 3600


def test_the_sweep_deletes_the_folders_of_hours_that_are_over(
        client: redis.Redis, tmp_path: Path) -> None:
    store = ArtifactStore(client, str(tmp_path), retention=60, max_side=512)
    kept = store.save_image(Image.new("RGB", (8, 8)), "t1")
    # A folder of an hour long over: its records expired, and a write that crashed there
    over = tmp_path / str(now_ms() // 3_600_000 - 2)
    over.mkdir()
    for name in ("a" * 32 + ".png", "b" * 32 + ".png", "c" * 32 + ".part"):
        (over / name).write_bytes(b"png")
    # and, in the hour still running, a file whose record is gone early: the sweep does
    # not look into folders still kept (it visits what expired, not every file)
    orphan = store.save_image(Image.new("RGB", (8, 8)), "t1")
    client.delete(keys.artifact(orphan.id))
    assert store.sweep(every=600) == 3
    assert not over.exists()
    assert store.path(kept).exists() and store.path(orphan).exists()


def test_the_sweep_deletes_unrecorded_files_of_the_older_layout(
        client: redis.Redis, tmp_path: Path) -> None:
    """Files written before folders were named by the hour (`<2 hex digits>/<id>.png`)."""
    store = ArtifactStore(client, str(tmp_path), retention=60, max_side=512)
    # `12...`: an old folder whose name is all digits is not taken for an hour's
    recorded, expired, fresh_orphan = "12" * 16, "b" * 32, "c" * 32
    for artifact_id in (recorded, expired, fresh_orphan):
        path = tmp_path / artifact_id[:2] / f"{artifact_id}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"png")
        _age(path, 7200 if artifact_id != fresh_orphan else 0)
    client.hset(keys.artifact(recorded), "tenant", "t1")
    crashed = tmp_path / "ab" / "crashed.part"
    crashed.parent.mkdir(exist_ok=True)
    crashed.write_bytes(b"half a png")
    _age(crashed, 7200)
    # One pass removes the old orphan and the crashed write, and nothing younger
    assert store.sweep(every=600, grace=3600) == 2
    assert (tmp_path / "12" / f"{recorded}.png").exists()
    assert (tmp_path / "cc" / f"{fresh_orphan}.png").exists()
    assert not (tmp_path / "bb" / f"{expired}.png").exists() and not crashed.exists()
    # Another machine sharing the directory waits its turn
    _age(tmp_path / "cc" / f"{fresh_orphan}.png", 7200)
    assert ArtifactStore(client, str(tmp_path), 60, 512).sweep(every=600, grace=3600) == 0
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
