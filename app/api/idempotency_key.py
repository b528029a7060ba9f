"""`Idempotency-Key` on the routes that create something (tasks/storage/idempotency.py holds
the rules and the store; this is how a Flask view takes part)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, request

from app.auth import current_tenant
from app.errors import ApiError
from tasks.services import current_services
from tasks.storage.idempotency import IdempotencyStore, KeyClaim, KeyResult

HEADER = "Idempotency-Key"
KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")
# How long a request waits for a concurrent one with its key before answering 409.
WAIT_SECONDS = 10.0


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run the view once per (tenant, key, body); replay its answer to repeats."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not KEY.match(key):
            raise ApiError(400, "INVALID_IDEMPOTENCY_KEY",
                           f"{HEADER} must be 1-255 printable ASCII characters")
        store: IdempotencyStore = current_services().idempotency
        record = store.record(current_tenant(), key)
        outcome = _claim(store, record, _fingerprint())
        if outcome.claim == KeyClaim.CLAIMED:
            return _run(store, record, view, args, kwargs)
        if outcome.claim == KeyClaim.DONE:
            return Response(outcome.body, outcome.status, mimetype="application/json",
                            headers={"Idempotent-Replayed": "true"})
        if outcome.claim == KeyClaim.REUSED:
            raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", f"This {HEADER} was used with "
                           "another request body; use a new key for a new request")
        raise ApiError(409, "IDEMPOTENCY_KEY_IN_USE", f"A request with this {HEADER} is "
                       "still running; retry shortly", retry_after=1)

    return wrapper


def _claim(store: IdempotencyStore, record: str, fingerprint: str) -> KeyResult:
    """Claim the key, or wait (a greenlet's sleep under gevent) while another request runs."""
    deadline = time.monotonic() + WAIT_SECONDS
    outcome = store.claim(record, fingerprint)
    while outcome.claim == KeyClaim.PENDING and time.monotonic() < deadline:
        time.sleep(0.05)
        outcome = store.claim(record, fingerprint)
    return outcome


def _run(store: IdempotencyStore, record: str, view: Callable[..., Any], args: Any,
         kwargs: Any) -> Response:
    try:
        result = view(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 (the app's one error mapping answers it)
        result = current_app.handle_user_exception(exc)
    response = current_app.make_response(result)
    store.answer(record, response.status_code, response.get_data(as_text=True))
    return response


def _fingerprint() -> str:
    """The body as its meaning: the same JSON with other spacing or key order matches."""
    raw = request.get_data()
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = raw
    return hashlib.sha256(request.path.encode() + b"\n" + canonical).hexdigest()
