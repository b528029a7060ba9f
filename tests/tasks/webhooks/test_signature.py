"""Standard Webhooks signatures, checked against the specification's own example."""

from __future__ import annotations

import pytest

from tasks.webhooks import signature

# From the Standard Webhooks specification's test vectors.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_STAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_signature_matches_the_specifications_example() -> None:
    assert signature.sign(SPEC_SECRET, SPEC_ID, SPEC_STAMP, SPEC_BODY) == SPEC_SIGNATURE
    headers = signature.headers([SPEC_SECRET], SPEC_ID, SPEC_BODY, SPEC_STAMP)
    signature.verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_STAMP + 10)


@pytest.mark.parametrize("change, reason", [
    ({"webhook-signature": "v1,AAAA"}, "no signature matches"),
    ({"webhook-timestamp": str(SPEC_STAMP - 600)}, "tolerance"),
    ({"webhook-id": None}, "missing"),
])
def test_a_tampered_or_stale_message_is_refused(change: dict[str, str | None],
                                                reason: str) -> None:
    headers = signature.headers([SPEC_SECRET], SPEC_ID, SPEC_BODY, SPEC_STAMP)
    headers = {k: v for k, v in {**headers, **change}.items() if v is not None}
    with pytest.raises(signature.InvalidSignature, match=reason):
        signature.verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_STAMP)


def test_a_changed_body_is_refused() -> None:
    headers = signature.headers([SPEC_SECRET], SPEC_ID, SPEC_BODY, SPEC_STAMP)
    with pytest.raises(signature.InvalidSignature):
        signature.verify(SPEC_SECRET, headers, SPEC_BODY + b" ", now=SPEC_STAMP)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = signature.new_secret(), signature.new_secret()
    headers = signature.headers([new, old], SPEC_ID, SPEC_BODY)
    for secret in (old, new):
        signature.verify(secret, headers, SPEC_BODY)
