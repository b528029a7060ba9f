"""Standard Webhooks signatures (standardwebhooks.com): what a receiver checks.

A message is signed as `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256
under the tenant's secret (`whsec_` and the key in base64), and the signature is
sent as `webhook-signature: v1,<base64>`. While a rotated-out secret is still in
its grace period the header carries one signature per secret, space-separated,
so a receiver holding either verifies. `verify` is what a receiver runs (the
tests' receiver runs it; the README shows it standing alone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

from tasks.core.errors import InvalidInput

PREFIX = "whsec_"
# Receivers refuse a timestamp further than this from their clock (replays).
TOLERANCE_SECONDS = 5 * 60


class InvalidSignature(InvalidInput):
    """No signature of the message verifies, or its timestamp is too old or new."""

    default_code = "INVALID_SIGNATURE"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(secrets_: Iterable[str], message_id: str, body: bytes,
            timestamp: int | None = None) -> dict[str, str]:
    """The three headers of a delivery, signed with each secret."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": message_id, "webhook-timestamp": str(stamp),
            "webhook-signature": " ".join(sign(s, message_id, stamp, body) for s in secrets_)}


def verify(secret: str, headers_: Mapping[str, str], body: bytes,
           now: float | None = None) -> None:
    """Raise InvalidSignature unless one of the message's signatures is `secret`'s."""
    try:
        message_id = headers_["webhook-id"]
        stamp = int(headers_["webhook-timestamp"])
        offered = headers_["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidSignature("missing or malformed webhook headers") from None
    if abs((time.time() if now is None else now) - stamp) > TOLERANCE_SECONDS:
        raise InvalidSignature("the timestamp is outside the tolerance")
    expected = sign(secret, message_id, stamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidSignature("no signature matches")
