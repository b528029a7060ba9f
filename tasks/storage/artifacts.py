"""The artifact store: generated and uploaded images, readable by their tenant only.

Files live under a local folder (shared storage such as a mounted volume when
the API and the workers run on different machines); the metadata that decides
who may read a file lives in Redis beside the jobs. A file goes into the folder of
the hour its record expires in (`<hour since the epoch>/<id>.png`), so the sweep
deletes whole folders once their hour is over: it visits what expired, never the
files still kept.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from PIL import Image, UnidentifiedImageError

from tasks.core import keys
from tasks.core.clock import iso, now_ms
from tasks.core.errors import InvalidInput
from tasks.core.scripts import Scripts
from tasks.storage.quotas import Admitted, QuotaExceeded, storage_exceeded

log = logging.getLogger(__name__)

ARTIFACT_ID = re.compile(r"^[0-9a-f]{32}\Z")
# The formats the API promises; Pillow's other decoders (many, some rarely audited)
# never see a tenant's bytes.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
# The sweep (ArtifactStore.sweep): its marker file; how long after its hour ends a
# folder is deleted (clocks of machines sharing it may differ a little from Redis');
# and, for files written before folders were named by the hour (two hex digits of the
# id), how old an unrecorded one must be before it counts as orphaned.
SWEEP_MARKER = ".last-sweep"
# An hour's folder (hours since the epoch: six digits since 1981); an older layout's are
# two hex digits, `12` among them.
HOUR_FOLDER = re.compile(r"^\d{5,}\Z")
SWEEP_SKEW_MS = 300_000
SWEEP_GRACE_SECONDS = 3600
URL_PREFIX = "/api/artifacts/"


class InvalidImage(InvalidInput):
    """Uploaded bytes that are not an image we accept."""

    default_code = "INVALID_UPLOAD"


@dataclass(frozen=True)
class Artifact:
    id: str
    tenant: str
    job_id: str
    path: str
    content_type: str
    width: int
    height: int

    @property
    def url(self) -> str:
        return URL_PREFIX + self.id

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "content_type": self.content_type,
                "width": self.width, "height": self.height}


def expiry_hour(retention: int) -> int:
    """The hour (since the epoch) in which a file written now expires."""
    return (now_ms() + retention * 1000) // 3_600_000


def artifact_id_from_url(url: str) -> str | None:
    """The artifact id an `image_url` names: `/api/artifacts/<id>`, absolute, or `artifact:<id>`."""
    candidate = url.removeprefix("artifact:") if url.startswith("artifact:") else None
    if candidate is None and URL_PREFIX in url:
        candidate = url.split(URL_PREFIX, 1)[1].split("?", 1)[0].strip("/")
    return candidate if candidate and ARTIFACT_ID.match(candidate) else None


class ArtifactStore:
    def __init__(self, client: redis.Redis, root: str, retention: int, max_side: int,
                 max_storage_bytes: int = 0) -> None:
        self._redis = client
        self._scripts = Scripts(client)
        self._root = Path(root)
        self._retention = retention
        self._max_side = max_side
        # Per tenant, for uploads (tasks/storage/quotas.py); 0: unbounded.
        self._max_storage = max_storage_bytes

    def save_image(self, image: Image.Image, tenant: str, job_id: str = "",
                   max_storage: int = 0) -> Artifact:
        """Write `image` as PNG (atomically), count it to its tenant's storage (refused
        past `max_storage`, when set) and record who owns it."""
        artifact_id, hour = uuid.uuid4().hex, expiry_hour(self._retention)
        relative = f"{hour}/{artifact_id}.png"
        target = self._root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        image.save(partial, format="PNG")
        size = partial.stat().st_size
        try:
            self._count(tenant, size, hour, max_storage)
        except QuotaExceeded:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        artifact = Artifact(artifact_id, tenant, job_id, relative, "image/png",
                            image.width, image.height)
        pipe = self._redis.pipeline()
        pipe.hset(keys.artifact(artifact_id), mapping={
            "tenant": tenant, "job_id": job_id, "path": relative, "created_at": iso(),
            "content_type": artifact.content_type, "width": image.width, "height": image.height,
            "bytes": size, "expires_hour": hour,
        })
        pipe.expire(keys.artifact(artifact_id), self._retention)
        if job_id:
            pipe.sadd(keys.job_artifacts(job_id), artifact_id)
            pipe.expire(keys.job_artifacts(job_id), self._retention)
        pipe.execute()
        return artifact

    def save_upload(self, data: bytes, tenant: str) -> Artifact:
        """Check that `data` is an image within limits, then store it as PNG."""
        try:
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                if max(image.size) > self._max_side:
                    raise InvalidImage(f"image sides must be at most {self._max_side} pixels")
                converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
            raise InvalidImage("the upload is not a PNG, JPEG or WebP image") from None
        return self.save_image(converted, tenant, max_storage=self._max_storage)

    def get(self, artifact_id: str, tenant: str = keys.ALL_TENANTS) -> Artifact | None:
        if not ARTIFACT_ID.match(artifact_id):
            return None
        raw = cast(dict[str, str], self._redis.hgetall(keys.artifact(artifact_id)))
        if not raw or (tenant != keys.ALL_TENANTS and raw["tenant"] != tenant):
            return None
        return Artifact(artifact_id, raw["tenant"], raw["job_id"], raw["path"],
                        raw["content_type"], int(raw["width"]), int(raw["height"]))

    def delete_job_artifacts(self, job_id: str, only: Iterable[str] | None = None) -> int:
        """Delete what a job produced (or `only` these of its artifacts: one run's), files
        first; returns how many went. Idempotent: a repeat (a retried compensation) finds
        nothing left and deletes nothing."""
        produced = {str(a) for a in self._redis.smembers(keys.job_artifacts(job_id))}
        artifact_ids = sorted(produced if only is None else produced & set(only))
        pipe = self._redis.pipeline(transaction=False)
        for artifact_id in artifact_ids:
            pipe.hmget(keys.artifact(artifact_id), "path", "tenant", "bytes", "expires_hour")
        for relative, tenant, size, hour in pipe.execute():
            if relative:
                (self._root / str(relative)).unlink(missing_ok=True)
            if tenant and size and hour:  # freed before it expired
                self._count(tenant, -int(size), int(hour))
        pipe = self._redis.pipeline()
        for artifact_id in artifact_ids:
            pipe.delete(keys.artifact(artifact_id))
        if artifact_ids:
            pipe.srem(keys.job_artifacts(job_id), *artifact_ids)
        deleted = pipe.execute()
        return sum(int(d) for d in deleted[:len(artifact_ids)])

    def _count(self, tenant: str, size: int, hour: int, most: int = 0) -> None:
        if tenant == keys.ALL_TENANTS:
            most = 0
        outcome, stored, *frees_in = self._scripts.storage(
            keys=[keys.quota_storage(tenant)],
            args=[size, hour, most, (self._retention + 3600) * 1000])
        if outcome == Admitted.QUOTA:
            raise storage_exceeded(most, int(stored), int(frees_in[0]))

    def sweep(self, every: float, grace: float = SWEEP_GRACE_SECONDS) -> int:
        """Delete the files whose records have expired (with the job retention, or an
        upload's), and writes that crashed halfway; returns how many went.

        At most once per `every` seconds per directory: a marker file in it says when
        the last sweep began, so machines that share the directory take turns (and two
        that race are harmless: a delete of a deleted file is nothing)."""
        if not self._claim_sweep(every):
            return 0
        return self._sweep_hours() + self._sweep_unhoured(grace)

    def _sweep_hours(self) -> int:
        """The folders of hours that are over, whole: every record in them has expired."""
        removed = 0
        for folder in self._root.iterdir():
            if HOUR_FOLDER.match(folder.name) and folder.is_dir() and \
                    (int(folder.name) + 1) * 3_600_000 + SWEEP_SKEW_MS < now_ms():
                removed += sum(1 for p in folder.iterdir() if p.suffix in (".png", ".part"))
                shutil.rmtree(folder, ignore_errors=True)
        if removed:
            log.info("artifact sweep: removed %d files of expired records", removed)
        return removed

    def _sweep_unhoured(self, grace: float) -> int:
        """Files written before folders were named by the hour: each is deleted once its
        record is gone. A file younger than `grace` is left alone: its record may be a
        moment behind it."""
        cutoff = time.time() - grace
        old = [p for p in self._root.glob("??/*") if p.suffix in (".png", ".part")
               and _mtime(p) < cutoff]
        removed = 0
        for start in range(0, len(old), 500):
            batch = old[start:start + 500]
            pipe = self._redis.pipeline(transaction=False)
            for path in batch:
                pipe.exists(keys.artifact(path.stem))
            for path, recorded in zip(batch, pipe.execute(), strict=True):
                if path.suffix == ".part" or not recorded:
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("artifact sweep: removed %d files of expired records", removed)
        return removed

    def _claim_sweep(self, every: float) -> bool:
        marker = self._root / SWEEP_MARKER
        if time.time() - _mtime(marker) < every:
            return False
        self._root.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return True

    def path(self, artifact: Artifact) -> Path:
        return self._root / artifact.path

    def load(self, artifact: Artifact) -> Image.Image:
        with Image.open(self.path(artifact)) as image:
            return image.convert("RGB")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
