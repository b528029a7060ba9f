"""`/ws` in the OpenAPI document (app/sockets.py holds the socket itself).

OpenAPI describes HTTP, so the socket appears as its handshake, a GET that answers 101,
with the protocol told in prose and its messages given as schemas under `x-websocket`
(`client`: what a client sends; `server`: what it receives).
"""

from __future__ import annotations

from app.openapi.operations import Answer, Op

PROSE = """\
Open with the key in `x-api-key` (or `Authorization: Bearer`). A browser, which cannot set \
headers on a WebSocket, first trades its key for a ticket (`POST /api/ws-tickets`) and opens \
`/ws?ticket=...`: the ticket is good for one handshake within a minute, so the key never \
travels in a URL. `?api_key=` works too. A bad key or ticket is refused with 401 before any \
event; past the tenant's open sockets it is 429 `QUOTA_EXCEEDED` with `Retry-After`.

Client messages (JSON, `x-websocket.client`): `{"action": "subscribe" | "unsubscribe", \
"job_id" | "workflow_id": ID, "since"?: EVENT_ID}`; an operator may subscribe with \
`"all": true`. With `since` the server replays the stored events after it (`"0"`: from the \
beginning), then the live ones, with no gap and no duplicate; without it, live events only.

Server messages (`x-websocket.server`): events, exactly as the history routes show them; \
`{"type": "subscribed", ..., "since"}` before a subscription's first event; \
`{"type": "unsubscribed", ...}`; and `{"type": "error", "code", "message"}`, after which the \
socket stays open. A tenant receives only its own events: another tenant's id is \
`JOB_NOT_FOUND` or `WORKFLOW_NOT_FOUND`, as over HTTP.

The server pings every `CHORDLINE_WS_PING_INTERVAL` seconds. A client too slow for its \
bounded queue is closed with 1013 (try again later): reconnect, and subscribe with `since` \
set to the last event id seen to resume without a gap."""


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SOCKET = Op(
    "sockets.events_socket", "get", "/ws", "websocket", "Live events over WebSocket",
    {101: Answer("Switching Protocols: the socket is open")},
    {400: ("INVALID_REQUEST",), 403: ("CSRF_FAILED",), 429: ("QUOTA_EXCEEDED",)},
    parameters=("ApiKeyQuery", "Ticket"), description=PROSE,
    extensions={"x-websocket": {
        "client": ref("SocketMessage"),
        "server": {"oneOf": [ref("Event"), ref("SocketAck"), ref("SocketError")]}}})
