"""/ws: live events over WebSocket (flask-sock).

The key is checked before the upgrade (`?api_key=`, since browsers cannot set
headers on a WebSocket, or `x-api-key`), so a bad key gets a plain 401 and no
event ever flows. Each socket has a reader (client messages) and a writer (its
bounded queue of events, fed by the process's one EventHub).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, Response, current_app, g
from flask_sock import Sock
from marshmallow import ValidationError
from simple_websocket import ConnectionClosed, Server
from wsproto.utilities import RemoteProtocolError

from app import payloads
from app.auth import authenticate, check_origin
from app.errors import ApiError, error_response
from app.event_hub import (
    EVERYTHING,
    EventHub,
    HubUnavailable,
    Subscriber,
    Topic,
)
from app.prometheus import WEBSOCKETS
from app.schemas.sockets import SOCKET_MESSAGE
from tasks.core.errors import flatten
from tasks.core.settings import OPERATOR_TENANT
from tasks.services import Services, current_services
from tasks.storage.quotas import SEAT_SECONDS

log = logging.getLogger(__name__)
bp = Blueprint("sockets", __name__)
sock = Sock()
# RFC 6455 close codes.
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008


@bp.before_request
def authenticate_socket() -> None:
    # A signed-in console's cookie works too, from this site only (browsers send
    # cookies on a WebSocket handshake whatever page opens it).
    principal = authenticate(allow_query_key=True)
    if principal.via == "console":
        check_origin()
    # A tenant's sockets are bounded across every web process (tasks/storage/quotas.py).
    g.socket_id = uuid.uuid4().hex
    quotas = current_services().jobs.quotas
    if not quotas.seat(principal.tenant, g.socket_id):
        raise ApiError(429, "QUOTA_EXCEEDED", f"At most {quotas.policy.max_websockets} "
                       "WebSockets per tenant", retry_after=SEAT_SECONDS)


@bp.teardown_request
def free_unused_seat(_exc: BaseException | None = None) -> None:
    """A handshake that never became a socket gives its seat back at once."""
    if g.get("socket_id") and not g.get("socket_started"):
        with contextlib.suppress(redis.RedisError):
            current_services().jobs.quotas.unseat(g.tenant, g.socket_id)


@bp.errorhandler(RemoteProtocolError)
def refuse_handshake(exc: RemoteProtocolError) -> tuple[Response, int]:
    """An upgrade that is not a WebSocket handshake (no Sec-WebSocket-Key, say): a 400."""
    return error_response(400, "INVALID_REQUEST", f"Not a WebSocket handshake: {exc}")


@sock.route("/ws", bp=bp)
def events_socket(ws: Server) -> None:
    g.socket_started = True
    hub: EventHub = current_app.extensions["event_hub"]
    services = current_services()
    SocketSession(ws, Subscriber(g.tenant, services.settings.ws_queue_size), hub,
                  services, g.socket_id).run()


# The kernel's send buffer per socket. Left to autotuning it grows to megabytes,
# which both hides a stalled client from the bounded queue and costs gigabytes
# across a thousand sockets.
SEND_BUFFER_BYTES = 64 * 1024


class SocketSession:
    def __init__(self, ws: Server, sub: Subscriber, hub: EventHub, services: Services,
                 socket_id: str) -> None:
        with contextlib.suppress(OSError, AttributeError):
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._ws = ws
        self._sub = sub
        self._hub = hub
        self._s = services
        self._closed = threading.Event()
        self._socket_id = socket_id
        self._seat_renewed = time.monotonic()

    def run(self) -> None:
        reader = threading.Thread(target=self._read, name="chordline-ws-reader", daemon=True)
        reader.start()
        WEBSOCKETS.inc()
        try:
            self._write()
        finally:
            WEBSOCKETS.dec()
            self._closed.set()
            self._hub.detach(self._sub)
            with contextlib.suppress(redis.RedisError):
                self._s.jobs.quotas.unseat(self._sub.tenant, self._socket_id)

    def _write(self) -> None:
        while not self._closed.is_set():
            self._renew_seat()
            if self._sub.too_slow:
                self._ws.close(TRY_AGAIN_LATER, "Too slow: events were dropped; "
                                                "reconnect with since to resume")
                return
            try:
                message = self._sub.outbox.get(timeout=1.0)
            except queue.Empty:
                if not self._ws.connected:
                    return
                continue
            if message is None:
                return
            self._ws.send(message)

    def _renew_seat(self) -> None:
        if time.monotonic() - self._seat_renewed < SEAT_SECONDS / 3:
            return
        self._seat_renewed = time.monotonic()
        with contextlib.suppress(redis.RedisError):  # a Redis blip must not close the socket
            self._s.jobs.quotas.seat(self._sub.tenant, self._socket_id)

    def _read(self) -> None:
        try:
            while not self._closed.is_set():
                raw = self._ws.receive(timeout=1.0)
                if raw is not None:
                    self._handle(raw)
        except ConnectionClosed:
            pass
        except redis.RedisError:
            log.warning("socket closed: Redis is unavailable", exc_info=True)
        finally:
            self._closed.set()
            with contextlib.suppress(queue.Full):
                self._sub.outbox.put_nowait(None)

    def _handle(self, raw: str | bytes) -> None:
        try:
            message = SOCKET_MESSAGE.load(payloads.loads(raw))
        except (ValueError, TypeError):
            return self._reply_error("INVALID_JSON", "Messages must be JSON objects")
        except ValidationError as exc:
            details = flatten(exc.normalized_messages())
            text = "; ".join(f"{k}: {' '.join(v)}" for k, v in details.items())
            return self._reply_error("INVALID_MESSAGE", f"Invalid message: {text}")
        topic = self._topic(message)
        if topic is None:
            return None
        subject = _subject(topic)
        if message["action"] == "unsubscribe":
            self._hub.unfollow(self._sub, topic)
            return self._reply({"type": "unsubscribed", **subject})
        if topic not in self._sub.topics and \
                len(self._sub.topics) >= self._s.settings.ws_max_subscriptions:
            return self._reply_error("TOO_MANY_SUBSCRIPTIONS", "At most "
                                     f"{self._s.settings.ws_max_subscriptions} per socket")
        since = message.get("since")
        if since is not None and self._replay_too_long(topic, since):
            most = self._s.jobs.quotas.policy.max_replay_events
            return self._reply_error("QUOTA_EXCEEDED", f"That replay is longer than {most} "
                                     "events: page through the /events endpoints, then "
                                     "subscribe from the last id")
        # Acknowledged first, so the replay and the live events follow it.
        self._reply({"type": "subscribed", **subject, "since": since})
        try:
            self._hub.follow(self._sub, topic, since)
        except HubUnavailable:
            self._hub.unfollow(self._sub, topic)
            self._reply_error("EVENTS_UNAVAILABLE", "Live events are unavailable; retry later")
        return None

    def _replay_too_long(self, topic: Topic, since: str) -> bool:
        quotas = self._s.jobs.quotas
        waiting = self._s.events.count_after(topic, since,
                                             quotas.policy.max_replay_events + 1)
        return not quotas.replay_allowed(self._sub.tenant, waiting)

    def _topic(self, message: dict[str, Any]) -> Topic | None:
        """The topic a message names, if this tenant may follow it (else an error reply)."""
        tenant = self._sub.tenant
        if message["all"]:
            if tenant != OPERATOR_TENANT:
                self._reply_error("FORBIDDEN", "Only an operator key may subscribe to all events")
                return None
            return EVERYTHING
        if job_id := message.get("job_id"):
            if self._s.store.get(job_id, tenant) is None:
                self._reply_error("JOB_NOT_FOUND", f"Job with ID {job_id} not found")
                return None
            return ("job", job_id)
        workflow_id = message["workflow_id"]
        if self._s.workflow_store.get(workflow_id, tenant) is None:
            self._reply_error("WORKFLOW_NOT_FOUND", f"Workflow with ID {workflow_id} not found")
            return None
        return ("workflow", workflow_id)

    def _reply(self, message: dict[str, Any]) -> None:
        self._sub.offer(json.dumps(message), wait=5.0)

    def _reply_error(self, code: str, message: str) -> None:
        self._reply({"type": "error", "code": code, "message": message})


def _subject(topic: Topic) -> dict[str, Any]:
    kind, ident = topic
    return {"all": True} if topic == EVERYTHING else {f"{kind}_id": ident}
