"""Session fixtures: one real Redis, one real worker, the app on a real socket."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

# Imported at collection rather than by hypothesis's own pytest plugin in the terminal
# summary: compiling its assertion-rewritten modules that late trips CPython 3.11's "AST
# constructor recursion depth mismatch" (pytest#10874) in a run that used no hypothesis test.
import hypothesis  # noqa: F401
import pytest
import redis
from flask import Flask

from app import create_app
from app.embedded_redis import NoRedisServer, RedisServer, find_server_binary
from tasks.services import Services
from tests.support import (
    ROOT,
    SESSION_DATABASES,
    Api,
    LiveServer,
    WorkerProcess,
    fresh_database,
    overrides_from_env,
    settings_env,
)

# The tiers (docs/development.md): a fast test drives one real Redis and no process of
# ours; an integration test runs worker (or web) processes; a system test kills
# processes, cuts network links, restarts Redis or drives the browser.
SYSTEM = frozenset({
    "tests/app/test_console.py", "tests/test_load.py", "tests/workers/test_compensation.py",
    "tests/workers/test_faults.py", "tests/workers/test_fleet.py", "tests/workers/test_netns.py",
    "tests/workers/test_reservations.py", "tests/workers/test_signals.py",
    "tests/workers/test_webhook_faults.py", "tests/workers/test_workflow_canvas.py",
})
# Modules that start processes of their own (gunicorn, the CLI) besides the fixtures.
PROCESSES = frozenset({
    "tests/app/test_api_edges.py", "tests/app/test_cli.py", "tests/app/test_metrics.py",
    "tests/app/test_waiting.py", "tests/test_deployment.py",
})


def pytest_report_header() -> str:
    """Which Redis-compatible server this run drives (CI runs the scripts on both)."""
    try:
        binary = find_server_binary()
    except NoRedisServer as exc:
        return f"redis server: none ({exc})"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return f"redis server: {binary}: {version.strip()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, so that `-m` runs one (`make test-fast`, ...)."""
    for item in items:
        path = item.path.resolve().relative_to(ROOT).as_posix() \
            if item.path.resolve().is_relative_to(ROOT) else item.path.as_posix()
        if path in SYSTEM:
            item.add_marker(pytest.mark.system)
        elif path in PROCESSES or path.startswith("tests/workers/") \
                or "worker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis started for this session on a free port (never the shared 6379)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), databases=SESSION_DATABASES).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def store_database(redis_server: RedisServer) -> str:
    """One database for the tests that drive Redis directly, flushed around each of them."""
    return fresh_database(redis_server.url)


@pytest.fixture
def client(store_database: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(store_database, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture(scope="session")
def stack_env(redis_server: RedisServer,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return settings_env(redis_server.url, tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def app(stack_env: dict[str, str]) -> Iterator[Flask]:
    app = create_app(overrides_from_env(stack_env))
    yield app
    app.extensions["event_hub"].stop()


@pytest.fixture(scope="session")
def services(app: Flask) -> Services:
    services: Services = app.extensions["chordline"]
    return services


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real Celery worker subprocess (prefork), shared by the session."""
    process = WorkerProcess(stack_env, tmp_path_factory.mktemp("logs") / "worker.log",
                            concurrency=4).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


@pytest.fixture
def api(live_server: LiveServer, worker: WorkerProcess) -> Api:
    """Tenant A's client, with a worker running behind the API."""
    return Api(live_server.url, "key-tenant-a")


@pytest.fixture
def api_b(live_server: LiveServer) -> Api:
    return Api(live_server.url, "key-tenant-b")


@pytest.fixture
def anonymous(live_server: LiveServer) -> Api:
    return Api(live_server.url, None)
