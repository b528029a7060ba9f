"""`Prefer: wait=N` (RFC 7240; Replicate's sync mode): answer when the job is final,
or after N seconds (at most 60), whichever comes first.

A waiter holds one of its tenant's connection seats (the WebSocket quota) and
follows the job's topic on the process's event hub, as a WebSocket does: it
sleeps on its own small queue until the job's terminal event arrives, so under
gunicorn's gevent workers it costs a greenlet, not a thread, and no request
polls Redis. It starts from the job's last event id, read before the
status, so an outcome that lands in between is replayed, not missed.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import time
import uuid

import redis
from flask import Response, current_app, request

from app.event_hub import EventHub, HubUnavailable, Subscriber
from tasks.core.events import EventType, job_feed
from tasks.core.statuses import TERMINAL
from tasks.services import Services, current_services

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 60
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)
FINAL_EVENTS = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED,
                          EventType.JOB_SKIPPED})


def requested_wait() -> int | None:
    """The seconds a `Prefer: wait=N` header asks for, capped; None without one."""
    found = PREFER_WAIT.search(request.headers.get("prefer", ""))
    return min(int(found.group(1)), MAX_WAIT_SECONDS) if found else None


def applied(response: Response, seconds: int) -> Response:
    response.headers["Preference-Applied"] = f"wait={seconds}"
    return response


def wait_until_final(job_id: str, tenant: str, seconds: float) -> None:
    """Return once the job is final, or after `seconds`; at once when the tenant's
    connection seats (tasks/storage/quotas.py, shared with its WebSockets) are all taken, or
    Redis falters: waiting is a courtesy, the answer is the status either way."""
    services = current_services()
    seat = f"wait-{uuid.uuid4().hex}"
    try:
        if not services.jobs.quotas.seat(tenant, seat):
            return
        try:
            _wait(services, job_id, tenant, seconds)
        finally:
            services.jobs.quotas.unseat(tenant, seat)
    except redis.RedisError:
        log.warning("Prefer: wait for job %s ended early: Redis is unavailable", job_id)


def _wait(services: Services, job_id: str, tenant: str, seconds: float) -> None:
    since = services.events.last_id(job_feed(job_id))
    job = services.store.get(job_id, tenant)
    if job is None or job.status in TERMINAL or seconds <= 0:
        return
    hub: EventHub = current_app.extensions["event_hub"]
    waiter = Subscriber(tenant, queue_size=256)
    deadline = time.monotonic() + seconds
    try:
        hub.follow(waiter, ("job", job_id), since)
        while (left := deadline - time.monotonic()) > 0 and not waiter.too_slow:
            message = waiter.outbox.get(timeout=left)
            if message is not None and json.loads(message).get("type") in FINAL_EVENTS:
                return
    except (queue.Empty, HubUnavailable):
        return  # the caller reads the status as it is now
    finally:
        hub.detach(waiter)
