"""Chordline's Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from tasks.core.settings import Settings


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, then the environment, then `overrides` (tests win)."""
    from app import console, openapi, prometheus, sockets
    from app.api import (
        artifacts,
        audit,
        events,
        health,
        jobs,
        machines,
        overview,
        tickets,
        webhooks,
        workflows,
    )
    from app.auth import KeyRing, init_correlation
    from app.errors import register_error_handlers
    from app.event_hub import EventHub
    from app.payloads import ApiJSONProvider
    from app.sessions import ConsoleSessions
    from app.tickets import WsTickets
    from tasks.celery_app import celery_init_app
    from tasks.services import Services, redis_client

    settings = Settings.from_env(overrides=overrides)
    _configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = ApiJSONProvider(app)
    celery = celery_init_app(app, settings)
    services = app.extensions["chordline"] = Services.build(settings, celery)
    # One pub/sub connection per process, opened on the first socket.
    app.extensions["event_hub"] = EventHub(redis_client(settings), services.events)
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": settings.ws_ping_interval,
                                         "max_message_size": 64 * 1024}
    app.extensions["keyring"] = KeyRing(settings.api_keys)
    app.extensions["console_sessions"] = ConsoleSessions(services.redis, settings)
    app.extensions["ws_tickets"] = WsTickets(services.redis)
    if not settings.api_keys:
        logging.getLogger(__name__).warning(
            "CHORDLINE_API_KEYS is empty: every API request will be refused (401)")
    register_error_handlers(app)
    init_correlation(app)
    prometheus.init_request_metrics(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp, url_prefix="/api/jobs")
    app.register_blueprint(artifacts.bp, url_prefix="/api/artifacts")
    app.register_blueprint(workflows.bp, url_prefix="/api/workflows")
    app.register_blueprint(webhooks.bp, url_prefix="/api/webhooks")
    app.register_blueprint(events.bp, url_prefix="/api/events")
    app.register_blueprint(machines.bp, url_prefix="/api/machines")
    app.register_blueprint(overview.bp, url_prefix="/api/overview")
    app.register_blueprint(audit.bp, url_prefix="/api/audit")
    app.register_blueprint(tickets.bp, url_prefix="/api/ws-tickets")
    app.register_blueprint(sockets.bp)
    app.register_blueprint(prometheus.bp)
    app.register_blueprint(console.bp, url_prefix="/dashboard")
    app.register_blueprint(openapi.bp)
    return app


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
