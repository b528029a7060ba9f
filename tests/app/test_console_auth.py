"""Who may sign in to the console and act, checked over plain HTTP (no browser needed)."""

from __future__ import annotations

import pytest
import requests

from app.sessions import FAILURES_PREFIX, MAX_REFUSALS
from tasks.core.errors import ConfigError
from tasks.core.settings import Settings
from tasks.services import Services
from tests.support import LiveServer


def test_viewer_keys_read_what_operators_read_and_change_nothing(live_server: LiveServer) -> None:
    viewer = {"x-api-key": "key-viewer"}
    assert requests.get(f"{live_server.url}/api/machines", headers=viewer,
                        timeout=5).status_code == 200
    assert requests.get(f"{live_server.url}/api/overview", headers=viewer,
                        timeout=5).status_code == 200
    refused = requests.post(f"{live_server.url}/api/jobs/submit", headers=viewer, timeout=5,
                            json={"type": "echo", "parameters": {"value": 1}})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")
    # A ticket to read events with is a POST a viewer may make
    assert requests.post(f"{live_server.url}/api/ws-tickets", headers=viewer,
                         timeout=5).status_code == 201
    tenant = requests.get(f"{live_server.url}/api/overview",
                          headers={"x-api-key": "key-tenant-a"}, timeout=5)
    assert tenant.status_code == 403


def test_only_one_role_name_is_accepted() -> None:
    with pytest.raises(ConfigError, match="@viewer"):
        Settings.from_env({"CHORDLINE_API_KEYS": "long-enough-key=@admin"})


def test_another_site_cannot_sign_a_browser_in(live_server: LiveServer) -> None:
    response = requests.post(f"{live_server.url}/dashboard/login", data={"key": "key-operator"},
                             headers={"origin": "https://evil.example"}, timeout=5,
                             allow_redirects=False)
    assert response.status_code == 403 and "chordline_session" not in response.cookies


def test_an_address_that_keeps_guessing_is_turned_away_and_audited(
        live_server: LiveServer, services: Services) -> None:
    url = f"{live_server.url}/dashboard/login"
    services.redis.delete(FAILURES_PREFIX + "127.0.0.1")  # earlier tests' refusals
    try:
        for _ in range(MAX_REFUSALS):
            assert requests.post(url, data={"key": "guess-guess"}, timeout=5).status_code == 401
        # Even the right key now waits: the address is locked out for a while
        locked = requests.post(url, data={"key": "key-operator"}, timeout=5,
                               allow_redirects=False)
        assert (locked.status_code, locked.json()["error"]["code"]) == (429, "RATE_LIMITED")
        audit = requests.get(f"{live_server.url}/api/audit?limit=1", timeout=5,
                             headers={"x-api-key": "key-operator"}).json()["entries"]
        assert (audit[0]["action"], audit[0]["outcome"]) == ("console.sign_in", "SIGN_IN_REFUSED")
        assert audit[0]["who"] == "unknown@127.0.0.1"
    finally:
        services.redis.delete(FAILURES_PREFIX + "127.0.0.1")
