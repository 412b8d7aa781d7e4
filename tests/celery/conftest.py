"""Real workers for the Celery tests: ``fixtures.celery_app`` in a subprocess, configured through its environment.

Each test gets its own queue and embedded-broker folder (parallel runs never cross-talk); Redis tests use DB 3
(broker) and 4 (backend). The caller side is a fresh, uninstrumented Celery app with the same configuration:
what the caller reads must have come from the worker.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
from celery import Celery

from fixtures.celery_app import config_from_env
from pytest_memguard.celery import start_worker_process
from tests.services import require_rabbitmq, require_redis

REDIS_BROKER_DB = 3
REDIS_BACKEND_DB = 4


def broker_env(kind: str, tmp_path) -> dict[str, str]:
    """Environment for the worker and the caller: ``embedded``, ``redis`` or ``rabbitmq`` (+ Redis backend)."""
    env = {"MEMGUARD_QUEUE": f"memguard-test-{uuid.uuid4().hex[:10]}", "MEMGUARD_FS_FOLDER": str(tmp_path / "broker")}
    if kind == "redis":
        env["MEMGUARD_BROKER_URL"] = require_redis(REDIS_BROKER_DB)
        env["MEMGUARD_RESULT_BACKEND"] = require_redis(REDIS_BACKEND_DB)
    elif kind == "rabbitmq":
        env["MEMGUARD_BROKER_URL"] = require_rabbitmq()
        env["MEMGUARD_RESULT_BACKEND"] = require_redis(REDIS_BACKEND_DB)
    elif kind != "embedded":
        raise ValueError(f"unknown broker kind {kind!r}")
    return env


def caller_app(env: dict[str, str]) -> Celery:
    app = Celery(f"caller-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(config_from_env(env))
    return app


@contextlib.contextmanager
def running_worker(tmp_path, *, kind: str = "embedded", pool: str = "prefork", concurrency: int = 1, env=None):
    """Yield ``(caller app, worker process)``; the worker is stopped (bounded) on exit, whatever happened."""
    worker_env = {**broker_env(kind, tmp_path), **(env or {})}
    app = caller_app(worker_env)
    try:
        with start_worker_process(
            "fixtures.celery_app",
            pool=pool,
            concurrency=concurrency,
            env=worker_env,
            log_path=tmp_path / f"worker-{pool}.log",
            ready_timeout=60,
        ) as worker:
            yield app, worker
    finally:
        app.close()


@pytest.fixture
def embedded_prefork(tmp_path):
    with running_worker(tmp_path, pool="prefork", concurrency=1) as pair:
        yield pair
