"""Webhooks across faults: a worker SIGKILLed mid-delivery and a Redis restart lose nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.embedded_redis import RedisServer
from tasks.core import keys
from tasks.core.events import job_feed
from tests.support import WebhookReceiver, wait_for
from tests.workers.conftest import StackFactory

pytestmark = pytest.mark.slow
JOBS = 4


def test_every_event_is_delivered_across_a_sigkill_and_a_redis_restart(
        make_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Given a Redis of our own (AOF), a worker, and a receiver whose first request
    # hangs, and which refuses (503) while `hold` is set
    redis_server = RedisServer(tmp_path_factory.mktemp("webhook-restart")).start()
    stack = make_stack(redis_server.url, CHORDLINE_WEBHOOK_CONNECT_TIMEOUT="1",
                       CHORDLINE_WEBHOOK_TIMEOUT="2", CHORDLINE_WEBHOOK_RETRY_CAP="1")
    hold = {"on": True}

    def reply(n: int, delivery: dict[str, Any]) -> tuple[int, dict[str, str]]:
        if n == 1:
            delivery["sleep"] = 4
            return 200, {}
        return (503, {}) if hold["on"] else (200, {})

    receiver = WebhookReceiver(stack.services.webhooks.rotate_secret("tenant-a"), reply)
    first = stack.worker("a")
    try:
        job_ids = [stack.submit({"type": "echo", "webhook_url": receiver.url,
                                 "webhook_events_filter": ["start", "completed"]})
                   for _ in range(JOBS)]

        # When worker A is SIGKILLed while its courier waits on the first delivery,
        # worker B takes over, and Redis restarts while deliveries are still refused
        wait_for(lambda: receiver.requests, 20, message="the first delivery to arrive")
        first.kill()
        stack.worker("b")
        wait_for(lambda: len(receiver.requests) > 3, 20, message="refused deliveries")
        redis_server.stop()
        time.sleep(1)
        redis_server.start()
        hold["on"] = False

        # Then every event the filter takes is delivered, verified, in order per job
        webhooks = stack.services.webhooks
        wait_for(lambda: all(d["status"] == "delivered"
                             for j in job_ids
                             for d in webhooks.deliveries(keys.job_webhooks(j)))
                 and len(receiver.ok) >= 2 * JOBS, 60, interval=0.2,
                 message="every delivery to be delivered")
        for job_id in job_ids:
            events = stack.services.events.read(job_feed(job_id))
            expected = [f"msg_{e['id']}" for e in events
                        if e["type"] in ("job.started", "job.completed")]
            arrived = list(dict.fromkeys(d["id"] for d in receiver.ok
                                         if d["body"]["data"]["job_id"] == job_id))
            assert arrived == expected, job_id
        assert all(d["verified"] for d in receiver.requests)
        # The attempt A never finished (and any other it held) is recorded as lost, and
        # its delivery went again under the same webhook-id
        lost = {d["id"] for j in job_ids for d in webhooks.deliveries(keys.job_webhooks(j))
                if any("lost" in (a["error"] or "") for a in d["attempts"])}
        assert receiver.requests[0]["id"] in lost
    finally:
        receiver.stop()
        for process in stack.workers:
            process.stop()
        redis_server.stop()
