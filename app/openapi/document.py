"""The OpenAPI 3.1 document, built by apispec from the operations table
(app/openapi/operations.py) and the marshmallow schemas the routes load and dump.

What every route of a kind can answer is added here, once: 400 `INVALID_CORRELATION_ID`
(every route reads `x-correlation-id`), 401 and 503 behind a key, 403 for staff routes and
for a viewer's or a cookie's change, 404 for a path id that cannot be one, 400
`INVALID_JSON` and 413 where a JSON body is read. Each error response lists its codes in
`x-error-codes` and holds the body to them (an `enum` on `error.code`), so a client, the
docs page and the schemathesis test all see the same contract.

apispec's conversion is corrected in one place (`_true_to_the_views`): Python's `\\Z`
becomes `$` (JSON Schema patterns are ECMA-262), a length on a dict bounds its
properties, `url` is the registered `uri` format, and a field dumped as null by default
may be null.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from http import HTTPStatus
from importlib import metadata
from inspect import cleandoc
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from app.api import NOT_FOUND
from app.api.idempotency_key import KEY as IDEMPOTENCY_KEY
from app.auth import CORRELATION_ID, READS_BY_POST
from app.openapi.operations import OPERATIONS, Access, Answer, Op
from app.openapi.websocket import SOCKET
from app.schemas.responses import ErrorSchema, EventSchema
from app.schemas.sockets import SocketAckSchema, SocketErrorSchema, SocketMessageSchema
from app.sessions import COOKIE
from tasks.core.keys import RECORD_ID
from tasks.core.names import MACHINE_ID

INTRO = """\
Run image-generation jobs and workflows on a fleet of GPU machines.

Every `/api/*` route needs a key, in `x-api-key` or `Authorization: Bearer`. A tenant's key \
sees only that tenant's jobs, workflows and images (another tenant's id is a 404); an \
operator's key sees everything and may use the operators' routes; a viewer's key reads what \
an operator reads and changes nothing (403 `FORBIDDEN`). The console's session cookie works \
for operators and viewers; a change made with it must carry its `x-csrf-token`.

Every error is `{"success": false, "error": {"code", "message", "details"?}}`: each response \
lists the stable codes it can carry (`x-error-codes`), and `message` is for people. 429s and \
a busy `Idempotency-Key` (409) say when to retry in `Retry-After`. Every response echoes \
`x-correlation-id` (the caller's, or a new one).

`/ws` is a WebSocket: its handshake is documented below, its messages under `x-websocket`."""

TAGS = [
    {"name": "jobs", "description": "Submit, read, list and cancel jobs"},
    {"name": "workflows", "description": "DAGs of steps, their cancellation and compensation"},
    {"name": "artifacts", "description": "Input images in, generated images out"},
    {"name": "webhooks", "description": "The tenant's webhook signing secret"},
    {"name": "websocket", "description": "Live events over `/ws`"},
    {"name": "machines", "description": "The GPU fleet (operators)"},
    {"name": "operators", "description": "Everything at once: events, overview, audit, metrics"},
    {"name": "health", "description": "For load balancers: no key"},
    {"name": "docs", "description": "This document, public"},
]
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "BearerKey": {"type": "http", "scheme": "bearer",
                  "description": "The same key as a bearer token (what Prometheus sends)"},
    "ConsoleSession": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                       "description": "A signed-in console (operators and viewers); a change "
                                      "needs the session's `x-csrf-token` header too"},
}
KEYED: list[dict[str, list[str]]] = [{"ApiKey": []}, {"BearerKey": []}, {"ConsoleSession": []}]
PATH_IDS = {name: RECORD_ID for name in NOT_FOUND} | {"machine_id": MACHINE_ID}


def ecma(pattern: str) -> str:
    """A Python pattern as JSON Schema reads it (ECMA-262 has no `\\A` or `\\Z`)."""
    return pattern.replace("\\Z", "$").replace("\\A", "^")


def string(pattern: re.Pattern[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "string", **({"pattern": ecma(pattern.pattern)} if pattern else {}), **extra}


PARAMETERS: dict[str, dict[str, Any]] = {
    "CorrelationId": {"in": "header", "name": "x-correlation-id", "schema": string(
        CORRELATION_ID), "description": "Carried into the job, its task and its log lines"},
    "IdempotencyKey": {"in": "header", "name": "Idempotency-Key", "schema": string(
        IDEMPOTENCY_KEY), "description": "Within 24 hours, the same key and body answer the "
                                         "first response again and create nothing"},
    "PreferWait": {"in": "header", "name": "Prefer", "schema": string(
        re.compile(r"^wait=[0-9]{1,6}$")), "description": "`wait=N`: answer when the job is "
                                                          "final or after N seconds (at most 60)"},
    "ApiKeyQuery": {"in": "query", "name": "api_key", "schema": string(),
                    "description": "The key, where no header can be set"},
    "Ticket": {"in": "query", "name": "ticket", "schema": string(),
               "description": "A ticket from `POST /api/ws-tickets`, good once"},
}
HEADERS = {
    "CorrelationId": {"schema": string(CORRELATION_ID), "description": "The request's"},
    "RetryAfter": {"schema": {"type": "integer"}, "description": "Seconds"},
    "IdempotentReplayed": {"schema": string(enum=["true"]),
                           "description": "This is the first answer to this key, again"},
    "PreferenceApplied": {"schema": string(), "description": "`wait=N`, as applied"},
}
HEADER_NAMES = {"x-correlation-id": "CorrelationId", "Retry-After": "RetryAfter",
                "Idempotent-Replayed": "IdempotentReplayed",
                "Preference-Applied": "PreferenceApplied"}


def build(views: Mapping[str, Callable[..., Any]] | None = None) -> dict[str, Any]:
    """The document, with each view's docstring (`app.view_functions`) where its row has
    no description; nothing in it comes from settings or secrets."""
    plugin = MarshmallowPlugin()
    spec = APISpec("Chordline API", _version(), "3.1.0", plugins=[plugin],
                   info={"description": INTRO}, tags=TAGS)
    plugin.converter.add_attribute_function(_true_to_the_views)  # type: ignore[union-attr]
    _components(spec)
    for op in (*OPERATIONS, SOCKET):
        spec.path(path=op.path, operations={op.method: operation(op, _doc(views or {}, op))})
    return spec.to_dict()


def _version() -> str:
    try:
        return metadata.version("chordline")
    except metadata.PackageNotFoundError:
        return "0"


def _doc(views: Mapping[str, Callable[..., Any]], op: Op) -> str:
    view = views.get(op.endpoint)
    return op.description or (cleandoc(view.__doc__) if view and view.__doc__ else "")


def _components(spec: APISpec) -> None:
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, parameter in PARAMETERS.items():
        spec.components.parameter(name, parameter["in"], parameter)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    for name, schema in (("Error", ErrorSchema), ("Event", EventSchema),
                         ("SocketMessage", SocketMessageSchema), ("SocketAck", SocketAckSchema),
                         ("SocketError", SocketErrorSchema)):
        spec.components.schema(name, schema=schema)


def operation(op: Op, description: str) -> dict[str, Any]:
    """One operation: its parameters, body, answers and the errors it can give."""
    found: dict[str, Any] = {
        "operationId": op.endpoint.replace(".", "_"), "tags": [op.tag], "summary": op.summary,
        "description": description, "security": [] if op.access is Access.PUBLIC else KEYED,
        "parameters": _parameters(op),
        "responses": {str(status): _answer(answer) for status, answer in op.answers.items()},
        **op.extensions}
    for status, codes in sorted(errors(op).items()):
        found["responses"][str(status)] = _error(status, codes)
    if op.body is not None:
        content = op.body if isinstance(op.body, dict) else {"application/json": {
            "schema": op.body, **({"example": op.example} if op.example else {})}}
        found["requestBody"] = {"required": not op.body_optional, "content": content}
    return found


def _parameters(op: Op) -> list[Any]:
    found: list[Any] = [{"in": "path", "name": name, "required": True,
                         "schema": string(PATH_IDS.get(name))}
                        for name in re.findall(r"{(\w+)}", op.path)]
    if op.query is not None:
        found.append({"in": "query", "schema": op.query})
    return [*found, "CorrelationId", *op.parameters]


def errors(op: Op) -> dict[int, list[str]]:
    """Every error code the operation can answer, by status."""
    found: dict[int, set[str]] = defaultdict(set)
    found[400].add("INVALID_CORRELATION_ID")
    if op.access is not Access.PUBLIC:
        found[401].add("UNAUTHORIZED")
        found[503].add("SERVICE_UNAVAILABLE")
    if op.access is Access.STAFF:
        found[403].add("FORBIDDEN")
    if op.method != "get" and op.access is not Access.PUBLIC:
        found[403].add("CSRF_FAILED")
        if op.endpoint not in READS_BY_POST:
            found[403].add("FORBIDDEN")
    for name in re.findall(r"{(\w+)}", op.path):
        found[404].add("NOT_FOUND")  # an id whose characters change the path, such as `a/b`
        if name in NOT_FOUND:
            found[404].add(NOT_FOUND[name][0])
    if op.body is not None and not isinstance(op.body, dict):
        found[400].add("INVALID_JSON")
        found[413].add("PAYLOAD_TOO_LARGE")
    for status, codes in op.errors.items():
        found[status].update(codes)
    return {status: sorted(codes) for status, codes in found.items()}


def _answer(answer: Answer) -> dict[str, Any]:
    found: dict[str, Any] = {"description": answer.description,
                             "headers": _headers("x-correlation-id", *answer.headers)}
    if answer.schema is not None:
        found["content"] = {answer.media: {"schema": answer.schema}}
    return found


def _error(status: int, codes: list[str]) -> dict[str, Any]:
    retry = ("Retry-After",) if status == 429 or "IDEMPOTENCY_KEY_IN_USE" in codes else ()
    schema = {"allOf": [{"$ref": "#/components/schemas/Error"}, {"properties": {"error": {
        "properties": {"code": {"enum": codes}}}}}]}
    return {"description": f"{HTTPStatus(status).phrase}: {', '.join(codes)}",
            "x-error-codes": codes, "headers": _headers("x-correlation-id", *retry),
            "content": {"application/json": {"schema": schema}}}


def _headers(*names: str) -> dict[str, str]:
    return {name: HEADER_NAMES[name] for name in names}


def _true_to_the_views(self: Any, field: fields.Field, ret: dict[str, Any],
                       **_: Any) -> dict[str, Any]:
    """Correct apispec's conversion of one field (see the module's docstring)."""
    if "pattern" in ret:
        ret["pattern"] = ecma(ret["pattern"])
    if isinstance(field, fields.Dict):
        for length, count in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
            if length in ret:
                ret[count] = ret.pop(length)
    if ret.get("format") == "url":
        ret["format"] = "uri"
    if field.dump_default is None and not field.allow_none:
        _nullable(ret)
    return {}


def _nullable(ret: dict[str, Any]) -> None:
    if "$ref" in ret:
        ret["anyOf"] = [{"$ref": ret.pop("$ref")}, {"type": "null"}]
    elif "type" in ret:
        types = ret["type"] if isinstance(ret["type"], list) else [ret["type"]]
        ret["type"] = [*types, "null"]
        if "enum" in ret:
            ret["enum"] = [*ret["enum"], None]
