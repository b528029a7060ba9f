"""The docs page's outline of the OpenAPI document: operations by tag, and each schema's
fields, as rows a template prints as they are.

Types become short text ("array of Job", "string or null") with a link to each schema they
name, so a reader follows a response to its fields without a script. The text comes from
our own document, and is escaped all the same.
"""

from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup, escape

BOUNDS = (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"),
          ("maxLength", "length ≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
          ("maxProperties", "keys ≤"))


def outline(document: dict[str, Any]) -> dict[str, Any]:
    """What the docs page shows, in its order."""
    info = document["info"]
    return {"title": info["title"], "version": info["version"],
            "intro": paragraphs(info.get("description", "")),
            "tags": _tags(document), "schemas": _schemas(document)}


def paragraphs(text: str) -> list[Markup]:
    """Blank-line separated paragraphs."""
    return [inline(p) for p in text.split("\n\n") if p.strip()]


def inline(text: str) -> Markup:
    """Text, escaped, with its `code` spans marked as code."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def type_of(schema: dict[str, Any]) -> Markup:
    """A schema as short text, linking the components it names."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return Markup('<a href="#schema-{0}">{0}</a>').format(name)
    for combined in ("anyOf", "oneOf"):
        if combined in schema:
            return Markup(" or ").join(type_of(s) for s in schema[combined])
    if "allOf" in schema:
        return type_of(schema["allOf"][0])
    if "enum" in schema:
        return escape("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    kinds = schema.get("type", "any")
    return Markup(" or ").join(_kind(schema, k) for k in (
        kinds if isinstance(kinds, list) else [kinds]))


def _kind(schema: dict[str, Any], kind: str) -> Markup:
    if kind == "array":
        return Markup("array of ") + type_of(schema.get("items", {}))
    extra = schema.get("additionalProperties")
    if kind == "object" and isinstance(extra, dict) and extra:
        return Markup("map of ") + type_of(extra)
    return escape(f"{kind} ({schema['format']})" if "format" in schema else kind)


def notes(schema: dict[str, Any]) -> Markup:
    """A field's bounds, pattern and default, in a few words."""
    found = [f"{word} {schema[key]}" for key, word in BOUNDS if key in schema]
    if "pattern" in schema:
        found.append(f"matches {schema['pattern']}")
    if "default" in schema:
        found.append(f"default {json.dumps(schema['default'])}")
    return inline("; ".join([schema.get("description", ""), *found]).strip("; "))


def _tags(document: dict[str, Any]) -> list[dict[str, Any]]:
    tags = {t["name"]: {**t, "operations": []} for t in document.get("tags", [])}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            tags[op["tags"][0]]["operations"].append(_operation(document, path, method, op))
    return [t for t in tags.values() if t["operations"]]


def _operation(document: dict[str, Any], path: str, method: str,
               op: dict[str, Any]) -> dict[str, Any]:
    body = op.get("requestBody")
    socket = op.get("x-websocket")
    return {
        "id": op["operationId"], "method": method.upper(), "path": path,
        "summary": op.get("summary", ""), "description": paragraphs(op.get("description", "")),
        "public": op.get("security") == [],
        "parameters": [_parameter(document, p) for p in op.get("parameters", [])],
        "body": body and {"required": body.get("required", False), "media": _media(body)},
        "responses": [{"status": status, "description": r.get("description", ""),
                       "codes": r.get("x-error-codes", []), "media": _media(r)}
                      for status, r in op["responses"].items()],
        "websocket": socket and {side: type_of(socket[side]) for side in ("client", "server")},
    }


def _parameter(document: dict[str, Any], parameter: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in parameter:
        parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
    schema = parameter.get("schema", {})
    return {"name": parameter["name"], "in": parameter["in"], "type": type_of(schema),
            "required": parameter.get("required", False),
            "notes": notes({**schema, "description": parameter.get("description", "")})}


def _media(body: dict[str, Any]) -> list[tuple[str, Markup]]:
    return [(media, type_of(c.get("schema", {}))) for media, c in body.get("content", {}).items()]


def _schemas(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "open": schema.get("additionalProperties") is not False,
             "fields": [{"name": key, "type": type_of(prop), "notes": notes(prop),
                         "required": key in schema.get("required", [])}
                        for key, prop in schema.get("properties", {}).items()]}
            for name, schema in sorted(document["components"]["schemas"].items())]
