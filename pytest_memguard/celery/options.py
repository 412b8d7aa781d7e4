"""The Celery layer's options and how they are resolved.

Precedence (highest first): keyword arguments to :func:`~pytest_memguard.celery.instrument`, then ``app.conf``
keys ``memguard_<name>``, then ``MEMGUARD_<NAME>`` environment variables, then the defaults below. The monitor's
own settings (``gc_policy``, ``warn_peak_mb``, …; see :mod:`pytest_memguard.runtime.config`) resolve the same way.
A misspelt key is an error that lists the known ones, not a silently ignored setting.

Celery-layer options (environment variable, default):

- ``records`` (``MEMGUARD_RECORDS``, on): deliver a ``TaskMemory`` per execution to the result backend.
- ``records_flush_ms`` (``MEMGUARD_RECORDS_FLUSH_MS``, 5): with a result backend where each write is a round trip
  (Redis, other key-value servers), records are written off the task's path, in batches, by a writer thread, at most
  about this long after their task finished; ``0`` writes each one inline in ``task_postrun``. Journals (``file://``,
  ``records_dir``) are always appended inline: a local append is cheaper than the hand-off to a thread.
- ``records_dir`` (``MEMGUARD_RECORDS_DIR``, none): deliver records to this folder instead (for result backends
  without a key-value API, e.g. ``rpc://`` or the database backend). Caller and worker must see the same folder.
- ``inflight_dir`` (``MEMGUARD_INFLIGHT_DIR``, ``<tmp>/memguard-inflight-<uid>``): where a running task's START
  and checkpoints are persisted, so its parent can report them if the child is killed.
- ``persist_running`` (``MEMGUARD_PERSIST_RUNNING``, ``auto``): ``auto`` persists in prefork children only (the one
  pool where a parent survives its child's death to report it); ``always``; ``never``.
- ``memory_limit`` (``MEMGUARD_MEMORY_LIMIT``, none): a size (``"4G"``) to judge near-OOM and ``Process%`` against
  when it is tighter than the cgroup/host limit found (e.g. a limit the container does not expose).
- ``oom_near_percent`` (``MEMGUARD_OOM_NEAR_PERCENT``, 90): a SIGKILLed child whose last known RSS was at least
  this share of the limit is ``suspected_oom``.
- ``gc_after_failure`` (``MEMGUARD_GC_AFTER_FAILURE``, on): a full collection after every failed or retried task.
  Failing tasks leave their frames (and large locals) in reference cycles; this bounds that at the cost of one
  collection per failure, which is rare by nature.
- ``log_level`` (``MEMGUARD_LOG_LEVEL``, ``INFO``): level of the START/checkpoint/FINISH lines.
- ``metrics`` (``MEMGUARD_METRICS``, off): Prometheus metrics (needs the ``prometheus`` extra).
- ``auto_instrument`` (``MEMGUARD_AUTO_INSTRUMENT``, on): a ``MonitoredTask`` instruments its app when bound.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, fields, replace
from typing import Any

from ..runtime.config import MonitorSettings, SettingError, coerce_setting, default_settings, settings_from_env
from ..runtime.units import SizeError, parse_size

PERSIST_CHOICES = ("auto", "always", "never")
CONF_PREFIX = "memguard_"


def _default_inflight_dir() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"memguard-inflight-{uid}")


@dataclass(frozen=True)
class CeleryOptions:
    records: bool = True
    records_flush_ms: float = 5.0
    records_dir: str | None = None
    inflight_dir: str = ""
    persist_running: str = "auto"
    memory_limit: int | None = None  # bytes
    oom_near_percent: float = 90.0
    gc_after_failure: bool = True
    log_level: int = logging.INFO
    metrics: bool = False
    auto_instrument: bool = True

    def __post_init__(self) -> None:
        if not self.inflight_dir:
            object.__setattr__(self, "inflight_dir", _default_inflight_dir())
        if self.persist_running not in PERSIST_CHOICES:
            raise SettingError(
                f"persist_running must be one of {', '.join(PERSIST_CHOICES)}; got {self.persist_running!r}"
            )
        if self.records_flush_ms < 0:
            raise SettingError(f"records_flush_ms must be >= 0 (0 writes inline), got {self.records_flush_ms!r}")
        if not 0 < self.oom_near_percent <= 100:
            raise SettingError(f"oom_near_percent must be in (0, 100], got {self.oom_near_percent!r}")


_CELERY_OPTION_NAMES = {f.name for f in fields(CeleryOptions)}
_MONITOR_SETTING_NAMES = {f.name for f in fields(MonitorSettings)}
KNOWN_OPTIONS = frozenset(_CELERY_OPTION_NAMES | _MONITOR_SETTING_NAMES)


def _coerce_celery_option(name: str, value: Any, source: str) -> Any:
    if value is None:
        return None
    if name in ("records", "gc_after_failure", "metrics", "auto_instrument"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise SettingError(f"{source} {name}: expected a boolean (1/0, true/false, on/off), got {value!r}")
    if name == "memory_limit":
        try:
            return parse_size(value, "MB", what=f"{source} {name}")
        except SizeError as exc:
            raise SettingError(str(exc)) from None
    if name in ("oom_near_percent", "records_flush_ms"):
        try:
            return float(value)
        except (TypeError, ValueError):
            unit = "percent" if name == "oom_near_percent" else "milliseconds"
            raise SettingError(f"{source} {name}: expected a number ({unit}), got {value!r}") from None
    if name == "log_level":
        if isinstance(value, int):
            return value
        level = logging.getLevelName(str(value).strip().upper())
        if not isinstance(level, int):
            raise SettingError(f"{source} {name}: expected a level name such as INFO or DEBUG, got {value!r}")
        return level
    if name == "persist_running":
        if isinstance(value, bool):
            return "always" if value else "never"
        return str(value).strip().lower()
    return str(value)


def _check_known(names, source: str) -> None:
    unknown = sorted(set(names) - KNOWN_OPTIONS)
    if unknown:
        raise SettingError(
            f"unknown memguard option(s) in {source}: {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_OPTIONS))}"
        )


def conf_options(app) -> dict[str, Any]:
    """``memguard_*`` keys of ``app.conf``, without the prefix."""
    found = {}
    for key in list(app.conf.keys()):
        if isinstance(key, str) and key.lower().startswith(CONF_PREFIX):
            found[key[len(CONF_PREFIX) :].lower()] = app.conf[key]
    _check_known(found, "app.conf (memguard_* keys)")
    return found


def resolve_options(app, overrides: dict[str, Any], environ=None) -> tuple[CeleryOptions, MonitorSettings]:
    """Apply the precedence rule of this module; returns the Celery-layer options and the monitor settings."""
    _check_known(overrides, "instrument() arguments")
    env = os.environ if environ is None else environ
    layers = [
        (
            "environment",
            {n: env[f"MEMGUARD_{n.upper()}"] for n in _CELERY_OPTION_NAMES if f"MEMGUARD_{n.upper()}" in env},
        ),
        ("app.conf", conf_options(app) if app is not None else {}),
        ("instrument() argument", overrides),
    ]
    options = CeleryOptions()
    settings = default_settings() if environ is None else settings_from_env(environ)
    for source, values in layers:
        celery_given = {
            n: _coerce_celery_option(n, v, source)
            for n, v in values.items()
            if n in _CELERY_OPTION_NAMES and v is not None
        }
        if celery_given:
            options = replace(options, **celery_given)
        monitor_given = {
            n: coerce_setting(n, v, source=source) for n, v in values.items() if n in _MONITOR_SETTING_NAMES
        }
        if monitor_given:
            settings = settings.with_overrides(**monitor_given)
    return options, settings
