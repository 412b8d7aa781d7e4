"""Reachability of what some tests need: Redis, PostgreSQL, RabbitMQ and a headless Chromium.

Why one helper for everyone: on a developer's machine a missing service should skip the tests that need it, with a
reason that says what is missing and how to point the tests elsewhere; under CI (``CI=true``) a missing service
is a broken environment and must fail, or the suite would go green by skipping. Each ``require_*`` returns what
the test needs (a URL, a path) or skips/fails; probes are cached, so calling them from many tests costs one
connection attempt per session.

Addresses default to the local services and can be overridden:
``MEMGUARD_TEST_REDIS_URL``, ``MEMGUARD_TEST_POSTGRES_URL``, ``MEMGUARD_TEST_RABBITMQ_URL``, ``MEMGUARD_CHROMIUM``.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_URL = os.environ.get("MEMGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Trust auth: which role exists depends on the image (postgres in the official one, root where created for CI).
POSTGRES_URLS = tuple(
    filter(
        None,
        (
            os.environ.get("MEMGUARD_TEST_POSTGRES_URL"),
            "postgresql://postgres@127.0.0.1:5432/test",
            "postgresql://root@127.0.0.1:5432/test",
        ),
    )
)
RABBITMQ_URL = os.environ.get("MEMGUARD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TIMEOUT_S = 2.0


def in_ci() -> bool:
    """True under CI (``CI=true``, as GitHub Actions, GitLab and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` outside CI; fail under CI, where every service must be up."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the CI environment must provide it)", pytrace=False)
    pytest.skip(reason)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@functools.cache
def _redis_problem(url: str) -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install -e '.[dev]')"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"Redis is not reachable at {url}: {exc} (set MEMGUARD_TEST_REDIS_URL)"
    return None


def require_redis(db: int | None = None) -> str:
    """The URL of a reachable Redis (with database ``db`` when given), or skip/fail."""
    url = REDIS_URL if db is None else _with_db(REDIS_URL, db)
    problem = _redis_problem(url)
    if problem:
        unavailable(problem)
    return url


@functools.cache
def _postgres_url() -> tuple[str | None, str]:
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[dev]')"
    problems = []
    for url in POSTGRES_URLS:
        try:
            with psycopg.connect(url, connect_timeout=int(_TIMEOUT_S) or 1) as conn:
                conn.execute("SELECT 1")
            return url, ""
        except Exception as exc:
            problems.append(f"{url}: {' '.join(str(exc).split())}")
    return None, "PostgreSQL is not reachable (" + "; ".join(problems) + ") (set MEMGUARD_TEST_POSTGRES_URL)"


def require_postgres() -> str:
    """The URL of a reachable PostgreSQL database (``test`` by default), or skip/fail."""
    url, problem = _postgres_url()
    if url is None:
        unavailable(problem)
    return url


@functools.cache
def _rabbitmq_problem(url: str) -> str | None:
    try:
        from kombu import Connection
    except ImportError:
        return "kombu is not installed (pip install -e '.[dev]')"
    parts = urlsplit(url)
    try:  # a refused port fails fast here; kombu alone would retry
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=_TIMEOUT_S).close()
        with Connection(url, connect_timeout=_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=_TIMEOUT_S)
    except Exception as exc:
        return f"RabbitMQ is not reachable at {url}: {exc} (set MEMGUARD_TEST_RABBITMQ_URL)"
    return None


def require_rabbitmq() -> str:
    """The URL of a reachable RabbitMQ, or skip/fail."""
    problem = _rabbitmq_problem(RABBITMQ_URL)
    if problem:
        unavailable(problem)
    return RABBITMQ_URL


def require_chromium() -> str:
    """The path of a headless-capable Chromium (Debian: ``apt-get install chromium``), or skip/fail."""
    candidates = [os.environ.get("MEMGUARD_CHROMIUM")] + list(CHROMIUM_NAMES)
    for name in filter(None, candidates):
        path = shutil.which(name)
        if path:
            return path
    unavailable("no Chromium found (apt-get install chromium, or set MEMGUARD_CHROMIUM)")
