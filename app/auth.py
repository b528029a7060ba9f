"""Who is asking: API keys, their roles, and the console's signed-in sessions.

`CHORDLINE_API_KEYS` maps each key to a tenant, to `*` (an operator) or to
`@viewer` (an operator who only reads). A request names its key in `x-api-key`
(or `Authorization: Bearer`, what a Prometheus scrape sends), or carries the
console's session cookie (app/sessions.py). Every route asks `principal()` the
same questions, so the rules live here once:

- a viewer reads what an operator reads (tenant `*`) and may change nothing;
- a cookie is a credential a browser attaches by itself, so a request that
  changes something with one must also carry the session's CSRF token and, if
  the browser says where it comes from (Origin), come from this site.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from app.errors import ApiError
from tasks.core.settings import OPERATOR_TENANT, VIEWER

CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}\Z")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
# POSTs that change nothing a viewer could not see: a ticket to read events with.
READS_BY_POST = frozenset({"tickets.issue"})


class Role(StrEnum):
    TENANT = "tenant"
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """A caller: the tenant whose records it sees (`*` for all), its role, and who it is
    in the audit log (the role and the key's fingerprint, never the key)."""

    tenant: str
    role: Role
    fingerprint: str
    via: str = "key"

    @property
    def who(self) -> str:
        return f"{self.role}:{self.fingerprint}"

    @property
    def is_staff(self) -> bool:
        """An operator or a viewer: sees every tenant and the fleet."""
        return self.role != Role.TENANT


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Looks keys up by digest, so the comparison time says nothing about the keys."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._by_digest = {digest(k): t for k, t in keys.items()}

    def principal(self, key: str | None) -> Principal | None:
        return self.by_digest(digest(key)) if key else None

    def by_digest(self, key_digest: str) -> Principal | None:
        """The principal of a key's digest: how a session finds out its key still exists."""
        found = None
        for known, tenant in self._by_digest.items():
            if hmac.compare_digest(known, key_digest):
                found = tenant
        if found is None:
            return None
        if found == VIEWER:
            return Principal(OPERATOR_TENANT, Role.VIEWER, key_digest[:8])
        role = Role.OPERATOR if found == OPERATOR_TENANT else Role.TENANT
        return Principal(found, role, key_digest[:8])


def presented_key() -> str | None:
    """The key in `x-api-key`, or in `Authorization: Bearer` (Prometheus' way)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def identify(*, allow_query_key: bool = False) -> Principal | None:
    """The request's principal from its key, else from its console session; None if neither.

    With `allow_query_key` (the WebSocket handshake), a single-use `ticket` or an
    `api_key` in the query string count too."""
    keyring: KeyRing = current_app.extensions["keyring"]
    key = presented_key() or (request.args.get("api_key") if allow_query_key else None)
    if key:
        g.key_digest = digest(key)
        return keyring.principal(key)
    ticket = request.args.get("ticket") if allow_query_key else None
    if ticket:
        key_digest = current_app.extensions["ws_tickets"].redeem(ticket)
        return keyring.by_digest(key_digest) if key_digest else None
    session = current_app.extensions["console_sessions"].current()
    if session is None:
        return None
    principal = keyring.by_digest(session.key_digest)
    if principal is None or not principal.is_staff:
        return None  # the key was revoked since the sign-in
    g.console_session = session
    return Principal(principal.tenant, principal.role, principal.fingerprint, via="console")


def authenticate(*, allow_query_key: bool = False) -> Principal:
    """The request's principal, or a 401; a cookie-borne change must pass the CSRF checks."""
    principal = identify(allow_query_key=allow_query_key)
    if principal is None:
        raise ApiError(401, "UNAUTHORIZED", "A valid x-api-key header is required")
    g.principal = principal
    g.tenant = principal.tenant
    if principal.via == "console" and request.method not in SAFE_METHODS:
        check_csrf()
    if principal.role == Role.VIEWER and request.method not in SAFE_METHODS \
            and request.endpoint not in READS_BY_POST:
        raise ApiError(403, "FORBIDDEN", "A viewer key may read but not change anything")
    return principal


def check_origin() -> None:
    """A cookie-borne request that says where it comes from must come from this site."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "CSRF_FAILED", "The request comes from another site")


def check_csrf() -> None:
    """A browser's change must come from this site and carry its session's token."""
    check_origin()
    token = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    if not hmac.compare_digest(token.encode(), g.console_session.csrf.encode()):
        raise ApiError(403, "CSRF_FAILED", "The request lacks the session's CSRF token")


def digest_of_request() -> str:
    """The digest of the key this request presented (a console session's, for the console)."""
    session = g.get("console_session")
    return session.key_digest if session is not None else str(g.key_digest)


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def current_tenant() -> str:
    tenant: str = g.tenant
    return tenant


def require_staff() -> None:
    """Operators' reads (the fleet, every event): an operator or a viewer."""
    if not current_principal().is_staff:
        raise ApiError(403, "FORBIDDEN", "Only an operator key may do this")


def init_correlation(app: Flask) -> None:
    """Take the caller's x-correlation-id (or make one) and echo it on every response."""

    @app.before_request
    def take_correlation_id() -> None:
        supplied = request.headers.get("x-correlation-id")
        if supplied is not None and not CORRELATION_ID.match(supplied):
            g.correlation_id = str(uuid.uuid4())
            raise ApiError(400, "INVALID_CORRELATION_ID",
                           "x-correlation-id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        g.correlation_id = supplied or str(uuid.uuid4())

    @app.after_request
    def echo_correlation_id(response: Response) -> Response:
        response.headers["x-correlation-id"] = g.get("correlation_id", "")
        return response
