"""Isolated stacks for fault tests: their own Redis database, workers and services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.embedded_redis import RedisServer
from tasks.services import Services
from tests.support import WorkerProcess, fresh_database, overrides_from_env, settings_env


@dataclass
class Stack:
    env: dict[str, str]
    app: Flask
    logs: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def services(self) -> Services:
        services: Services = self.app.extensions["chordline"]
        return services

    def worker(self, name: str, concurrency: int = 1) -> WorkerProcess:
        process = WorkerProcess(self.env, self.logs / f"{name}.log", concurrency, name).start()
        self.workers.append(process)
        return process

    def submit(self, body: dict[str, object]) -> str:
        request = {"priority": 50, "retries": 0, **body}
        return self.services.jobs.submit("tenant-a", request, "fault-test").id

    def job(self, job_id: str) -> dict[str, object]:
        job = self.services.store.get(job_id)
        assert job is not None
        return dict(job.fields)

    def close(self) -> None:
        for process in self.workers:
            process.stop()
        self.app.extensions["event_hub"].stop()


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Build a stack on `redis_url` (or a fresh database of the session Redis)."""
    stacks: list[Stack] = []

    def build(redis_url: str, **extra: str) -> Stack:
        env = settings_env(redis_url, tmp_path / "artifacts", **extra)
        app = create_app(overrides_from_env(env))
        stack = Stack(env, app, tmp_path)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.close()


@contextmanager
def shared_stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer,
                 name: str, concurrency: int, **extra: str) -> Iterator[Stack]:
    """A stack with one wide worker, for the tests of a module to share."""
    env = settings_env(fresh_database(redis_server.url), tmp_path_factory.mktemp("artifacts"),
                       **extra)
    stack = Stack(env, create_app(overrides_from_env(env)), tmp_path_factory.mktemp(name))
    try:
        stack.worker(name, concurrency)
        yield stack
    finally:
        stack.close()


@pytest.fixture
def stack(make_stack: StackFactory, redis_server: RedisServer) -> Stack:
    return make_stack(fresh_database(redis_server.url))
