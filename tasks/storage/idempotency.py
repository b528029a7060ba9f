"""Idempotency keys (Stripe's semantics) for the requests that create something.

A client that timed out may send the same `Idempotency-Key` again: within a day,
the same key with the same body answers the first response and creates nothing;
with another body, it is refused. The first request claims the key atomically
(tasks/storage/lua/idempotency_claim.lua), so of two concurrent requests only one runs and the
other waits for its answer. A claim lasts `CLAIM_SECONDS` until the answer is
stored, so a request that crashed halfway frees its key (after three minutes)
instead of blocking it for a day; an answer that says "try again" (429, 5xx) is not kept at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import redis

from tasks.core import keys
from tasks.core.scripts import Scripts

RETENTION_SECONDS = 24 * 3600
# Longer than any request may run (a Prefer: wait of 60 s included), so a claim
# never lapses under a live request and lets a retry create a second job.
CLAIM_SECONDS = 180
RETRY_LATER = frozenset({409, 429})


class KeyClaim(StrEnum):
    CLAIMED = "claimed"  # this request runs, and stores its answer
    PENDING = "pending"  # another request with this key is running
    DONE = "done"  # answered before: replay it
    REUSED = "reused"  # the key came with another body


@dataclass(frozen=True)
class KeyResult:
    claim: KeyClaim
    status: int = 0
    body: str = ""


class IdempotencyStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._scripts = Scripts(client)

    @staticmethod
    def record(tenant: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return keys.idempotency(tenant, digest)

    def claim(self, record: str, fingerprint: str) -> KeyResult:
        state, *answer = self._scripts.idempotency_claim(keys=[record],
                                                         args=[fingerprint, CLAIM_SECONDS])
        if state == KeyClaim.DONE:
            return KeyResult(KeyClaim.DONE, int(answer[0]), answer[1])
        return KeyResult(KeyClaim(state))

    def answer(self, record: str, status: int, body: str) -> None:
        """Keep the answer for a day; one that says "try again later" (429, 5xx) frees
        the key instead, so the retry it asks for can run."""
        if status >= 500 or status in RETRY_LATER:
            self._redis.delete(record)
            return
        pipe = self._redis.pipeline()
        pipe.hset(record, mapping={"state": KeyClaim.DONE, "status": status, "body": body})
        pipe.expire(record, RETENTION_SECONDS)
        pipe.execute()
