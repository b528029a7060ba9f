"""The current process's services, for the Celery tasks that run inside its app.

tasks/services.py builds them and stands at the top of the house. A task in a room
below it reaches them here, and types them by a protocol of what it uses
(tasks/jobs/runner.py `RunnerServices`), so no room imports the builder; services.py
checks that what it builds satisfies each protocol.
"""

from __future__ import annotations

from typing import Any

from flask import current_app


def app_services() -> Any:
    """The services of the current Flask app (also inside Celery tasks)."""
    return current_app.extensions["chordline"]
