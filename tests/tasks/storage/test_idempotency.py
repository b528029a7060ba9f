"""The idempotency store: a claim that a crash cannot hold for a day."""

from __future__ import annotations

import pytest
import redis

from tasks.storage.idempotency import CLAIM_SECONDS, RETENTION_SECONDS, IdempotencyStore, KeyClaim


def test_a_claim_lives_a_minute_and_an_answer_a_day(client: redis.Redis) -> None:
    store = IdempotencyStore(client)
    record = store.record("t1", "key-1")
    assert store.claim(record, "fp").claim == KeyClaim.CLAIMED
    assert 0 < client.ttl(record) <= CLAIM_SECONDS
    assert store.claim(record, "fp").claim == KeyClaim.PENDING
    assert store.claim(record, "other").claim == KeyClaim.REUSED
    store.answer(record, 200, '{"ok": true}')
    done = store.claim(record, "fp")
    assert (done.claim, done.status, done.body) == (KeyClaim.DONE, 200, '{"ok": true}')
    assert CLAIM_SECONDS < client.ttl(record) <= RETENTION_SECONDS


@pytest.mark.parametrize("status", [429, 503])
def test_an_answer_that_says_try_again_frees_the_key(client: redis.Redis, status: int) -> None:
    store = IdempotencyStore(client)
    record = store.record("t1", f"key-{status}")
    store.claim(record, "fp")
    store.answer(record, status, "{}")
    assert store.claim(record, "fp").claim == KeyClaim.CLAIMED
