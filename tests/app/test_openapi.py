"""The OpenAPI document and its docs page: complete, valid, public, and telling nothing of
the deployment. (tests/app/test_schemathesis.py holds the live API to it.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask

from app.openapi.document import build
from tasks.services import Services

ROOT = Path(__file__).resolve().parents[2]
# Not API routes, so not in the document: Flask's `/static/` (the app has no static folder,
# the rule exists anyway) and the docs page's stylesheet are files; `/dashboard` is the
# console, HTML pages for browsers signed in with a cookie (README: the console), whose
# actions call the API's own routes.
NOT_API = re.compile(r"^/static/|^/dashboard(/|$)|^/api/docs/static/")
AUTOMATIC = {"HEAD", "OPTIONS"}  # Flask answers these for every route by itself
# An error code written where the document cannot see it: a literal in a raise, or a
# class's own code in the hierarchy (tasks/core/errors.py).
RAISED = re.compile(
    r'(?:ApiError\(\d{3},\s*|NotFound\(|QuotaExceeded\(|\bcode=|default_code = )"([A-Z_]+)"')
# Codes of errors that never leave their process as an answer: the hierarchy's own
# defaults, a run's ending (the runner records it), start-up and client-side failures,
# and what a service catches and answers as another error (an egress refusal is a
# JOB_SUBMISSION_FAILED, a quota script's refusal a RATE_LIMITED or QUOTA_EXCEEDED).
NOT_ANSWERED = {
    "CONFLICT", "CONFIG_ERROR", "LEASE_LOST", "STEP_STOPPED", "NO_REDIS_SERVER", "USAGE",
    "UNKNOWN_JOB_TYPE", "INVALID_DAG", "MODEL_TOO_LARGE", "INVALID_SIGNATURE", "REFUSED",
    "WEBHOOK_URL_FORBIDDEN", "WEBHOOK_HOST_UNRESOLVED", "INVALID_EVENT_ID",
    "EVENTS_UNAVAILABLE",
}


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    """The document as the app serves it, without a key."""
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200 and response.is_json
    found: dict[str, Any] = response.get_json()
    return found


def routes(app: Flask) -> set[tuple[str, str]]:
    """Every (OpenAPI path, method) the app answers, but for NOT_API and AUTOMATIC."""
    return {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules() if not NOT_API.match(rule.rule)
            for method in (rule.methods or set()) - AUTOMATIC}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def test_every_route_is_documented_with_each_of_its_methods(
        app: Flask, document: dict[str, Any]) -> None:
    assert routes(app) - operations(document) == set()


def test_every_documented_operation_is_a_route(app: Flask, document: dict[str, Any]) -> None:
    assert operations(document) - routes(app) == set()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        dialect = {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema"}
        assert jsonschema_rs.meta.is_valid(dialect), name


def test_the_served_document_is_the_built_one(app: Flask, document: dict[str, Any]) -> None:
    assert document == build(app.view_functions)


def test_every_error_code_the_code_raises_is_documented(document: dict[str, Any]) -> None:
    # The console's pages (app/console) are not API routes; the rest raise API errors.
    sources = [p for folder in ("app", "tasks") for p in (ROOT / folder).rglob("*.py")
               if "console" not in p.parts]
    raised = {code for p in sources for code in RAISED.findall(p.read_text())}
    documented = {code for item in document["paths"].values() for op in item.values()
                  for answer in op["responses"].values()
                  for code in answer.get("x-error-codes", [])}
    assert raised and raised - documented - NOT_ANSWERED == set()
    assert {"BROKER_UNAVAILABLE", "INVALID_CURSOR", "WORKFLOW_NOT_CANCELLABLE",
            "WORKFLOW_NOT_COMPENSABLE", "JOB_NOT_FOUND"} <= raised


def test_the_socket_errors_documented_are_the_ones_it_sends(document: dict[str, Any]) -> None:
    sent = set(re.findall(r'_reply_error\("([A-Z_]+)"', (ROOT / "app/sockets.py").read_text()))
    documented = document["components"]["schemas"]["SocketError"]["properties"]["code"]["enum"]
    assert sent and sent == set(documented)


def test_each_error_response_holds_its_body_to_its_codes(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if "x-error-codes" not in answer:
                    continue
                schema = answer["content"]["application/json"]["schema"]
                enum = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                assert enum == answer["x-error-codes"], (method, path, status)


def test_the_docs_and_the_document_need_no_key_and_tell_no_secret(
        app: Flask, services: Services) -> None:
    client = app.test_client()
    settings = services.settings
    secrets = [*settings.api_keys, settings.redis_url, settings.broker_url,
               settings.secret_key, settings.artifact_dir, *settings.webhook_allow_hosts]
    for path in ("/api/openapi.json", "/api/docs"):
        response = client.get(path)
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        assert [s for s in secrets if s and s in text] == []


def test_the_docs_page_shows_every_operation_and_loads_nothing_from_elsewhere(
        app: Flask, document: dict[str, Any]) -> None:
    response = app.test_client().get("/api/docs")
    page = response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    for path, method in operations(document):
        assert f'{method.upper()}</span> <code>{path}</code>' in page, (method, path)
    for code in ("JOB_NOT_FOUND", "IDEMPOTENCY_KEY_REUSED", "QUOTA_EXCEEDED"):
        assert f"<code>{code}</code>" in page
    assert 'id="schema-JobSubmit"' in page and 'href="#schema-Error"' in page
    assert "<script" not in page and not re.search(r'(?:src|href)="(?:https?:)?//', page)
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert stylesheet and app.test_client().get(stylesheet.group(1)).status_code == 200
