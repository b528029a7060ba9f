"""Webhook deliveries in Redis: queued with their event, claimed under a lease, settled."""

from __future__ import annotations

import dataclasses
import json
import time

import redis

from tasks.core import keys
from tasks.core.events import EventLog, job_feed
from tasks.jobs.store import JobStore
from tasks.webhooks.store import (
    JOB_EVENTS,
    STEP_EVENTS,
    AttemptOutcome,
    Settled,
    WebhookStore,
    event_filter,
)
from tests.tasks.conftest import new_job

URL = "https://hooks.example.com/in"


def hooked_job(store: JobStore, job_id: str, categories: tuple[str, ...]) -> str:
    job = dataclasses.replace(new_job(), webhook_url=URL, webhook_events=categories)
    store.create(job_id, job, None)
    return keys.job_webhooks(job_id)


def test_the_filter_keeps_the_event_types_of_its_categories() -> None:
    assert event_filter(["completed"], JOB_EVENTS) == ",job.cancelled,job.completed,job.failed,"
    assert event_filter(["queued"], STEP_EVENTS) == ""


def test_an_event_the_filter_takes_is_queued_with_it(client: redis.Redis,
                                                     store: JobStore) -> None:
    hooks = hooked_job(store, "j1", ("queued",))
    hooked_job(store, "j2", ("completed",))

    [queued] = EventLog(client).read(job_feed("j1"))
    [delivery] = WebhookStore(client, 60).deliveries(hooks)
    assert (delivery["id"], delivery["type"]) == (f"msg_{queued['id']}", "job.queued")
    assert delivery["status"] == "pending" and delivery["attempts"] == []
    assert client.zrange(keys.WEBHOOK_OUTBOX, 0, -1) == [hooks]  # j2's filter took nothing


def test_a_claim_is_a_lease_and_a_lost_attempt_is_recorded(client: redis.Redis,
                                                           store: JobStore) -> None:
    webhooks = WebhookStore(client, 60)
    hooked_job(store, "j1", ("queued",))

    [first] = webhooks.claim(lease_s=0.2, most=10)
    assert webhooks.claim(lease_s=0.2, most=10) == []  # held
    time.sleep(0.3)  # its deliverer died: the lease runs out
    [second] = webhooks.claim(lease_s=5, most=10)

    assert (first.id, first.attempt, second.attempt) == (second.id, 1, 2)
    assert json.loads(first.payload)["type"] == "job.queued"
    assert webhooks.settle(first, AttemptOutcome.DELIVERED, {}) == Settled.STALE
    settled = webhooks.settle(second, AttemptOutcome.DELIVERED, {"status_code": 200})
    assert settled == Settled.SETTLED
    [delivery] = webhooks.deliveries(keys.job_webhooks("j1"))
    assert delivery["status"] == "delivered"
    assert [(a["n"], a["status_code"]) for a in delivery["attempts"]] == [(1, None), (2, 200)]
    assert "lost" in delivery["attempts"][0]["error"]
    assert client.zcard(keys.WEBHOOK_OUTBOX) == 0


def test_a_subject_sends_one_delivery_at_a_time_in_event_order(client: redis.Redis,
                                                               store: JobStore) -> None:
    webhooks = WebhookStore(client, 60)
    job = dataclasses.replace(new_job(), webhook_url=URL, webhook_events=("queued",),
                              waiting_reason="no machine fits")
    store.create("j1", job, None)  # job.queued, then job.unschedulable

    [head] = webhooks.claim(lease_s=5, most=10)
    assert webhooks.settle(head, AttemptOutcome.RETRY, {"status_code": 503},
                           next_ms=int(time.time() * 1000) + 60_000) == Settled.SETTLED
    assert webhooks.claim(lease_s=5, most=10) == []  # the next waits behind its retry
    client.zadd(keys.WEBHOOK_OUTBOX, {keys.job_webhooks("j1"): 0})  # the retry comes due
    [again] = webhooks.claim(lease_s=5, most=10)
    assert (again.id, again.attempt) == (head.id, 2)
    webhooks.settle(again, AttemptOutcome.FAILED, {"status_code": 410, "error": "answered 410"})
    [after] = webhooks.claim(lease_s=5, most=10)

    first, second = webhooks.deliveries(keys.job_webhooks("j1"))
    assert (first["type"], first["status"], second["type"]) == (
        "job.queued", "failed", "job.unschedulable")
    assert after.id == second["id"]
    events = [e["type"] for e in EventLog(client).read(job_feed("j1"))]
    assert events[-1] == "webhook.failed"


def test_rotation_keeps_the_previous_secret_for_the_grace_only(client: redis.Redis) -> None:
    short = WebhookStore(client, secret_grace=0.2)
    assert short.signing_secrets("t1") == []
    old = short.rotate_secret("t1")
    new = short.rotate_secret("t1")
    assert short.signing_secrets("t1") == [new, old]
    time.sleep(0.3)
    assert short.signing_secrets("t1") == [new]
    assert short.signing_secrets("t2") == []


def test_a_secret_is_made_on_first_use_and_kept(client: redis.Redis) -> None:
    webhooks = WebhookStore(client, secret_grace=60)
    made = webhooks.secret("t1")
    assert made.startswith("whsec_") and webhooks.secret("t1") == made
    assert webhooks.signing_secrets("t1") == [made]
    rotated = webhooks.rotate_secret("t1")
    assert webhooks.secret("t1") == rotated
    assert webhooks.signing_secrets("t1") == [rotated, made]


def test_removing_a_job_removes_its_deliveries(client: redis.Redis, store: JobStore) -> None:
    hooks = hooked_job(store, "j1", ("queued",))
    store.delete("j1")
    assert not client.exists(hooks, keys.webhook_queue(hooks))
    assert client.zcard(keys.WEBHOOK_OUTBOX) == 0
