"""Settings: read once from the environment; bad settings stop the process early."""

from __future__ import annotations

import pytest

from tasks.core.errors import ConfigError
from tasks.core.settings import Settings


def test_defaults_are_safe_and_the_broker_follows_redis() -> None:
    settings = Settings.from_env(environ={})
    assert settings.redis_url == settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.test_handlers is False and settings.api_keys == {}
    assert settings.port == 8000


def test_environment_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env(environ={
        "REDIS_URL": "redis://r:6380/2", "CELERY_BROKER_URL": "amqp://guest@mq//",
        "PORT": "9000", "CHORDLINE_API_KEYS": "abcdefgh=acme, operator-key=*",
        "CHORDLINE_TEST_HANDLERS": "yes", "CHORDLINE_LEASE_SECONDS": "12.5",
    })
    assert settings.broker_url == "amqp://guest@mq//" and not settings.broker_is_redis
    assert settings.port == 9000 and settings.lease_seconds == 12.5
    assert settings.api_keys == {"abcdefgh": "acme", "operator-key": "*"}
    assert settings.test_handlers is True


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env(environ={"PORT": "9000"}, overrides={"port": 9100})
    assert settings.port == 9100


@pytest.mark.parametrize(("environ", "message"), [
    ({"CHORDLINE_TYPO": "1"}, "unknown setting(s): CHORDLINE_TYPO"),
    ({"PORT": "eighty"}, "PORT is malformed"),
    ({"PORT": "70000"}, "PORT must be between"),
    ({"CHORDLINE_TEST_HANDLERS": "maybe"}, "CHORDLINE_TEST_HANDLERS is malformed"),
    ({"CHORDLINE_API_KEYS": "nokey"}, "expected key=tenant pairs"),
    ({"CHORDLINE_API_KEYS": "short=t"}, "at least 8 characters"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL"),
    ({"REDIS_URL": "amqp://x//"}, "REDIS_URL must use redis://"),
    ({"CHORDLINE_LEASE_SECONDS": "0"}, "CHORDLINE_LEASE_SECONDS must be positive"),
    ({"CHORDLINE_REAPER_INTERVAL": "30"}, "must be shorter than CHORDLINE_LEASE_SECONDS"),
    ({"CHORDLINE_JOB_RETENTION": "3600"},
     "CHORDLINE_EVENT_RETENTION must not exceed CHORDLINE_JOB_RETENTION"),
])
def test_unknown_or_malformed_settings_fail_with_a_clear_message(
        environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(environ=environ)


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting override"):
        Settings.from_env(environ={}, overrides={"colour": "red"})
