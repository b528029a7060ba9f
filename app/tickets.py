"""WebSocket tickets: a short-lived, single-use stand-in for a key in `/ws?ticket=`.

Browsers cannot set headers on a WebSocket, so a key would travel in the URL,
where proxies and access logs keep it. A client that holds a key asks
`POST /api/ws-tickets` (with the key in its header) for a ticket instead: a
random token that names the key's digest in Redis for `TICKET_SECONDS` and is
deleted by the handshake that uses it (GETDEL), so a logged or leaked ticket
is worth nothing.
"""

from __future__ import annotations

import secrets
from typing import cast

import redis

from tasks.core import keys

TICKET_PREFIX = keys.WS_TICKET_PREFIX
TICKET_SECONDS = 60


class WsTickets:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def issue(self, key_digest: str) -> str:
        ticket = secrets.token_urlsafe(24)
        self._redis.set(TICKET_PREFIX + ticket, key_digest, ex=TICKET_SECONDS)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The key digest a ticket stood for, once; None when unknown, used or expired."""
        if not 16 <= len(ticket) <= 64:
            return None
        return cast(str | None, self._redis.getdel(TICKET_PREFIX + ticket))
