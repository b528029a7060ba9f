"""Asking the workers to look at the routes again, now rather than at their next look.

A worker consumes the route queues it can run (workers/routing.py) and looks at the
routes every CHORDLINE_ROUTING_INTERVAL; a process that publishes to a route new to
it, or an operator who changes a machine, asks them to look at once with the
`chordline_refresh_routes` control command. A lost request costs only time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery

log = logging.getLogger(__name__)

# The worker control command that makes workers look at the routes again (workers/routing.py).
REFRESH_ROUTES = "chordline_refresh_routes"


class RouteRefresh:
    """One process's requests to refresh, once per route new to it."""

    def __init__(self, celery: Celery, base_queue: str) -> None:
        self._celery = celery
        self._base_queue = base_queue
        # Route queues this process has told the workers about.
        self._announced: set[str] = set()

    def announce(self, queues: Iterable[str]) -> None:
        """Ask the workers to look at the routes again when a queue is new to this process,
        so that a new route's first job is pulled at once rather than at their next look."""
        new = set(queues) - self._announced - {self._base_queue}
        if not new:
            return
        # Claimed before the broadcast: the concurrent first submits of a new route
        # (greenlets of one gunicorn worker) send one request between them, not one each.
        self._announced |= new
        if not self.ask():
            self._announced -= new

    def ask(self, hostnames: list[str] | None = None) -> bool:
        """Ask workers (all, or these) to look at the routes again now."""
        try:
            # A connection of its own, never one from the pool: `broadcast` holds the
            # connection it acquires while the mailbox acquires a producer from the same
            # pool (kombu's pidbox), so concurrent broadcasts on a pooled one can all hold
            # one connection and wait for a second that never comes: the API hung so.
            with self._celery.connection_for_write() as connection:
                self._celery.control.broadcast(REFRESH_ROUTES, destination=hostnames,
                                               connection=connection)
        except Exception:
            log.warning("could not ask the workers to refresh their routes", exc_info=True)
            return False
        return True
