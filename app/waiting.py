"""`Prefer: wait=N` (RFC 7240; Replicate's sync mode): answer when the job is final,
or after N seconds (at most 60), whichever comes first.

A waiter follows the job's topic on the process's event hub, as a WebSocket
does: it sleeps on its own small queue until the job's terminal event arrives,
so under gunicorn's gevent workers it costs a greenlet, not a thread, and no
request polls Redis. It starts from the job stream's last id read before the
status, so an outcome that lands in between is replayed, not missed.
"""

from __future__ import annotations

import json
import queue
import re
import time

from flask import Response, current_app, request

from app.event_hub import EventHub, HubUnavailable, Subscriber
from tasks import keys
from tasks.events import EventType
from tasks.services import current_services
from tasks.statuses import TERMINAL

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
    """Return once the job is final, or after `seconds`."""
    services = current_services()
    since = services.events.last_id(keys.job_events(job_id))
    job = services.store.get(job_id, tenant)
    if job is None or job.status in TERMINAL or seconds <= 0:
        return
    hub: EventHub = current_app.extensions["event_hub"]
    waiter = Subscriber(tenant, queue_size=256)
    topic = ("job", job_id)
    deadline = time.monotonic() + seconds
    try:
        hub.follow(waiter, topic, since)
        while (left := deadline - time.monotonic()) > 0 and not waiter.too_slow:
            message = waiter.outbox.get(timeout=left)
            if message is not None and json.loads(message).get("type") in FINAL_EVENTS:
                return
    except (queue.Empty, HubUnavailable):
        return  # the caller reads the status as it is now
    finally:
        hub.detach(waiter)
