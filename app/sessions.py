"""The console's sign-in sessions: a signed cookie naming a record kept in Redis.

The cookie holds only a random session id, signed (itsdangerous) so that a
guessed or altered one is refused before Redis is asked; it is HttpOnly (no
script reads it), SameSite=Strict (no other site's page sends it) and expires
with the session. The record holds the key's digest (never the key), the role
and the CSRF token, and expires in Redis at the same time. So a restart of the
API keeps every sign-in, signing out ends the session everywhere at once, and
a revoked key ends its sessions at their next request (app/auth.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import cast

import redis
from flask import Response, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from tasks.core import keys
from tasks.core.settings import Settings

COOKIE = "chordline_session"
SECRET = keys.CONSOLE_SECRET
SESSION_PREFIX = keys.CONSOLE_SESSION_PREFIX
# Refused sign-ins an address may make before it waits LOCKOUT_SECONDS (keys are
# long random strings: this slows guessing, it does not replace long keys).
FAILURES_PREFIX = keys.CONSOLE_REFUSED_PREFIX
MAX_REFUSALS = 20
LOCKOUT_SECONDS = 300


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    key_digest: str
    csrf: str


class ConsoleSessions:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._lifetime = settings.console_session_seconds
        self._secure = settings.secure_cookies
        self._secret = settings.secret_key
        self._signer: URLSafeTimedSerializer | None = None

    def _serializer(self) -> URLSafeTimedSerializer:
        """Signs with CHORDLINE_SECRET_KEY, else with a random secret that the first web
        process to need one stores in Redis, so every process (and the next) agrees."""
        if self._signer is None:
            secret = self._secret
            if not secret:
                self._redis.set(SECRET, secrets.token_hex(32), nx=True)
                secret = cast(str, self._redis.get(SECRET))
            self._signer = URLSafeTimedSerializer(secret, salt="chordline-console")
        return self._signer

    def start(self, key_digest: str, response: Response) -> ConsoleSession:
        session = ConsoleSession(secrets.token_urlsafe(24), key_digest, secrets.token_urlsafe(24))
        pipe = self._redis.pipeline()
        pipe.hset(SESSION_PREFIX + session.id,
                  mapping={"key_digest": key_digest, "csrf": session.csrf})
        pipe.expire(SESSION_PREFIX + session.id, self._lifetime)
        pipe.execute()
        response.set_cookie(COOKIE, self._serializer().dumps(session.id), max_age=self._lifetime,
                            httponly=True, samesite="Strict", secure=self._secure, path="/")
        return session

    def current(self) -> ConsoleSession | None:
        """The request's session, if its cookie is ours, unexpired and not signed out."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        try:
            session_id = self._serializer().loads(cookie, max_age=self._lifetime)
        except BadSignature:
            return None
        record = cast(dict[str, str], self._redis.hgetall(SESSION_PREFIX + str(session_id)))
        if not record:
            return None
        return ConsoleSession(str(session_id), record["key_digest"], record["csrf"])

    def refused(self, address: str) -> None:
        """Count a refused sign-in from `address` (kept for LOCKOUT_SECONDS)."""
        key = FAILURES_PREFIX + address
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, LOCKOUT_SECONDS)
        pipe.execute()

    def locked_out(self, address: str) -> bool:
        return int(cast(str, self._redis.get(FAILURES_PREFIX + address)) or 0) >= MAX_REFUSALS

    def end(self, session: ConsoleSession | None, response: Response) -> None:
        if session is not None:
            self._redis.delete(SESSION_PREFIX + session.id)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                               secure=self._secure)
