"""Options and ini keys of the Celery fixtures, read once into :class:`CeleryTestOptions` at configure time.

Why apart from :mod:`.options`: they concern only the Celery fixtures (:mod:`.celery_fixtures`), and reading them
must not import Celery (an optional extra), so a bad value is still a one-line ``pytest.UsageError`` before any test
runs, with or without Celery installed. The app path itself is imported lazily, by the fixture that needs it.

Precedence for each: command-line option > ini key > default. For the mode, the test's ``celery_mode`` marker beats
both (see :func:`.celery_fixtures.mode_of`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

MODES = ("eager", "worker")
POOLS = ("prefork", "solo", "threads")
DEFAULT_MODE = "eager"
DEFAULT_CONCURRENCY = 2
DEFAULT_TIMEOUT_S = 60.0

_OPTIONS = {
    # name: (metavar, help)
    "memguard_celery_app": (
        "PKG.MODULE:APP",
        "the Celery app under test for the Celery fixtures (ini: memguard_celery_app), e.g. proj.celery:app",
    ),
    "memguard_celery_mode": (
        "eager|worker",
        "run Celery tasks in the test process (eager, the default) or on a real worker process (worker); the "
        "celery_mode marker of a test wins (ini: memguard_celery_mode)",
    ),
    "memguard_celery_broker": (
        "URL",
        "broker of the test worker, e.g. redis://127.0.0.1:6379/7 (default: the embedded memguard-fs broker in a "
        "temporary folder; ini: memguard_celery_broker)",
    ),
    "memguard_celery_backend": (
        "URL",
        "result backend of the test worker (default: the broker's own for Redis, else a file:// backend in a "
        "temporary folder; ini: memguard_celery_backend)",
    ),
    "memguard_celery_concurrency": (
        "N",
        f"pool processes of the test worker (default {DEFAULT_CONCURRENCY}; ini: memguard_celery_concurrency)",
    ),
    "memguard_celery_pool": ("POOL", f"pool of the test worker: {', '.join(POOLS)} (default prefork)"),
    "memguard_celery_timeout": (
        "SECONDS",
        f"how long to wait for a task's result and memory record (default {DEFAULT_TIMEOUT_S:g})",
    ),
}


def add_celery_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("memguard-celery", "Celery tasks under test (pytest-memguard)")
    for name, (metavar, text) in _OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), dest=name, metavar=metavar, default=None, help=text)
        parser.addini(name, text, default=None)


@dataclass(frozen=True)
class CeleryTestOptions:
    app_path: str | None = None
    mode: str = DEFAULT_MODE
    broker: str | None = None
    backend: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    pool: str = "prefork"
    timeout: float = DEFAULT_TIMEOUT_S
    app_origin: str = ""


def _value(config: pytest.Config, name: str) -> tuple[str | None, str]:
    """The raw value and where it came from (for error messages)."""
    flag = "--" + name.replace("_", "-")
    value = config.getoption(name)
    if value not in (None, ""):
        return str(value).strip(), flag
    value = config.getini(name)
    if value not in (None, ""):
        return str(value).strip(), f"ini key {name} ({config.inipath or 'ini'})"
    return None, flag


def _choice(config: pytest.Config, name: str, choices: tuple[str, ...], default: str) -> str:
    value, origin = _value(config, name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise pytest.UsageError(f"pytest-memguard: {origin}: unknown value {value!r}; use one of {', '.join(choices)}")
    return value.lower()


def _number(config: pytest.Config, name: str, default: float, *, integer: bool) -> float:
    value, origin = _value(config, name)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise pytest.UsageError(f"pytest-memguard: {origin}: expected {kind}, got {value!r}") from None
    if number <= 0:
        raise pytest.UsageError(f"pytest-memguard: {origin}: must be > 0, got {value!r}")
    return number


def read_celery_options(config: pytest.Config) -> CeleryTestOptions:
    """The Celery fixtures' settings; bad values raise ``pytest.UsageError`` naming the option and the fix."""
    app_path, app_origin = _value(config, "memguard_celery_app")
    if app_path is not None:
        module, _, attr = app_path.partition(":")
        parts = module.split(".") + (attr.split(".") if attr else [])
        if not module or not all(p.isidentifier() for p in parts):
            raise pytest.UsageError(
                f"pytest-memguard: {app_origin}: {app_path!r} is not an app path; write it as 'pkg.module:app' "
                "(the module that defines the Celery app, a colon, the attribute name)"
            )
    broker, _ = _value(config, "memguard_celery_broker")
    backend, _ = _value(config, "memguard_celery_backend")
    for url, name in ((broker, "memguard_celery_broker"), (backend, "memguard_celery_backend")):
        if url is not None and "://" not in url:
            raise pytest.UsageError(
                f"pytest-memguard: --{name.replace('_', '-')}: {url!r} is not a URL; write e.g. "
                "redis://127.0.0.1:6379/7 or amqp://guest:guest@127.0.0.1:5672//"
            )
    return CeleryTestOptions(
        app_path=app_path,
        mode=_choice(config, "memguard_celery_mode", MODES, DEFAULT_MODE),
        broker=broker,
        backend=backend,
        concurrency=int(_number(config, "memguard_celery_concurrency", DEFAULT_CONCURRENCY, integer=True)),
        pool=_choice(config, "memguard_celery_pool", POOLS, "prefork"),
        timeout=_number(config, "memguard_celery_timeout", DEFAULT_TIMEOUT_S, integer=False),
        app_origin=app_origin,
    )
