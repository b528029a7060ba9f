"""One hierarchy for every error Chordline raises on purpose.

Each carries a stable `code` and the HTTP `status` it answers with, so the web layer
maps all of them with one handler (app/errors.py) and a route has no try/except of its
own. The branches say what went wrong, not where:

- `InvalidInput` (400): the request names something we cannot do.
- `NotFound` (404), `Conflict` (409), `TooManyRequests` (429), `Unavailable` (503).
- `RunError`: a job's run ended early (a handler's `JobError`, a lost lease, a stopped
  step); it never reaches HTTP, the runner records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class ChordlineError(Exception):
    """The base: a message, a stable code, and the HTTP status it answers with."""

    # An instance may answer with another status (app/errors.py ApiError does).
    status: int = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None,
                 details: Mapping[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details
        # Seconds, for a Retry-After header.
        self.retry_after = retry_after


class InvalidInput(ChordlineError, ValueError):
    """The request is well-formed JSON but asks for something we cannot do."""

    status = 400
    default_code = "INVALID_REQUEST"


class ValidationFailed(InvalidInput):
    """Field-level errors, read as the seed's: 'Job validation failed: a, b'."""

    def __init__(self, errors: Mapping[str, Any], *, code: str, what: str) -> None:
        self.errors = flatten(errors)
        parts = [m if name.split(".")[-1].lower() in m.lower() else f"{name}: {m}"
                 for name, messages in self.errors.items() for m in messages]
        super().__init__(f"{what} validation failed: {', '.join(parts)}", code=code,
                         details=self.errors)


class NotFound(ChordlineError, LookupError):
    status = 404
    default_code = "NOT_FOUND"


class Conflict(ChordlineError):
    """The record is not in a state that allows this."""

    status = 409
    default_code = "CONFLICT"


class TooManyRequests(ChordlineError):
    status = 429
    default_code = "QUOTA_EXCEEDED"


class Unavailable(ChordlineError):
    """Something we depend on refused: nothing was stored, try again shortly."""

    status = 503
    default_code = "SERVICE_UNAVAILABLE"


class ConfigError(ChordlineError, ValueError):
    """A setting is unknown or malformed: the process stops at start-up."""

    default_code = "CONFIG_ERROR"


class RunError(ChordlineError):
    """A job's run ended early; the runner records why (never an HTTP answer)."""


class JobError(RunError):
    """A failure with a stable code; `retryable=False` fails the job at once."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable


class LeaseLost(RunError):
    """Another run took this job over: stop without writing an outcome."""

    def __init__(self, message: str = "the lease was lost") -> None:
        super().__init__(message, code="LEASE_LOST")


class StepStopped(RunError):
    """The step's workflow is compensating and the handler allows it to stop: the
    step is cancelled, and what it saved so far is deleted."""

    def __init__(self, percent: int) -> None:
        super().__init__(f"stopped at {percent}%", code="STEP_STOPPED")
        self.percent = percent


def flatten(errors: Mapping[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {'parameters.width': [...]}."""
    flat: dict[str, list[str]] = {}
    for name, value in errors.items():
        key = prefix if name == "_schema" and prefix else (
            f"{prefix}.{name}" if prefix else str(name))
        if isinstance(value, Mapping):
            flat.update(flatten(value, key))
        else:
            flat.setdefault(key, []).extend(str(v) for v in value)
    return flat
