"""Monitor settings and their ``MEMGUARD_*`` environment defaults.

Why a module of its own: the same knobs are set from keyword arguments (code), ``app.conf.memguard_*`` (Celery),
ini keys (pytest) and environment variables (containers). One dataclass with one precedence rule — explicit
argument > environment > built-in default — keeps those four doors opening onto the same room.

Settings (environment variable, default):

- ``gc_policy`` (``MEMGUARD_GC_POLICY``, ``growth``): ``growth`` runs a full collection after work once RSS has
  grown by ``gc_growth_mb`` since the last full collection; ``always`` collects after every monitor (the seed's
  behaviour: up to ~100 ms at 1 M objects); ``never``.
- ``gc_growth_mb`` (``MEMGUARD_GC_GROWTH_MB``, 32): the growth that triggers a collection under ``growth``.
- ``count_gc_objects`` (``MEMGUARD_COUNT_GC_OBJECTS``, off): ``GC objects=N`` in log lines
  (``len(gc.get_objects())`` costs ~18 ms at 1 M objects).
- ``peak_mode`` (``MEMGUARD_PEAK_MODE``, ``auto``): ``auto``/``kernel`` use the kernel's resettable high-water
  mark, sampling where it is refused; ``sample`` always samples.
- ``sample_interval_ms`` (``MEMGUARD_SAMPLE_INTERVAL_MS``, 10): the sampler's period.
- ``trace_heap`` (``MEMGUARD_TRACE_HEAP``, off): tracemalloc current/peak of the Python heap.
- ``include_children`` (``MEMGUARD_INCLUDE_CHILDREN``, off): count child processes' RSS toward the peak.
- ``warn_peak_mb`` (``MEMGUARD_WARN_PEAK_MB``, 1000): WARNING when peak RSS exceeds it (the seed's value).
- ``warn_process_percent`` (``MEMGUARD_WARN_PROCESS_PERCENT``, 80): WARNING above this % of the effective limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from .units import MB

GC_POLICIES = ("growth", "always", "never")
PEAK_MODES = ("auto", "kernel", "sample")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """A setting with a value that cannot be used; the message names the setting, its source and the fix."""


@dataclass(frozen=True)
class MonitorSettings:
    gc_policy: str = "growth"
    gc_growth_mb: float = 32.0
    count_gc_objects: bool = False
    peak_mode: str = "auto"
    sample_interval_ms: float = 10.0
    trace_heap: bool = False
    include_children: bool = False
    warn_peak_mb: float = 1000.0
    warn_process_percent: float = 80.0

    def __post_init__(self) -> None:
        if self.gc_policy not in GC_POLICIES:
            raise SettingError(f"gc_policy must be one of {', '.join(GC_POLICIES)}; got {self.gc_policy!r}")
        if self.peak_mode not in PEAK_MODES:
            raise SettingError(f"peak_mode must be one of {', '.join(PEAK_MODES)}; got {self.peak_mode!r}")
        if self.sample_interval_ms <= 0:
            raise SettingError(f"sample_interval_ms must be > 0, got {self.sample_interval_ms!r}")
        for name in ("gc_growth_mb", "warn_peak_mb", "warn_process_percent"):
            if getattr(self, name) < 0:
                raise SettingError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    # Byte figures the per-task path compares against, computed once per settings object.
    @cached_property
    def gc_growth_bytes(self) -> float:
        return self.gc_growth_mb * MB

    @cached_property
    def warn_peak_bytes(self) -> float:
        return self.warn_peak_mb * MB

    def with_overrides(self, **overrides: Any) -> MonitorSettings:
        """A copy with the given settings changed; ``None`` values are ignored (not given)."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise SettingError(
                f"unknown memguard setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        given = {k: coerce_setting(k, v, source="argument") for k, v in overrides.items() if v is not None}
        return replace(self, **given) if given else self


def coerce_setting(name: str, value: Any, *, source: str) -> Any:
    """Convert a setting from text (env, ini, app.conf) to its type, with an error that names where it came from."""
    kind = MonitorSettings.__dataclass_fields__[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingError(f"{source} {name}: expected a boolean (1/0, true/false, on/off), got {value!r}")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise SettingError(f"{source} {name}: expected a number, got {value!r}") from None
    return str(value).strip().lower()


def settings_from_env(environ: dict[str, str] | None = None, base: MonitorSettings | None = None) -> MonitorSettings:
    """Settings with ``MEMGUARD_<NAME>`` environment variables applied over ``base`` (default: built-ins)."""
    env = os.environ if environ is None else environ
    base = base or MonitorSettings()
    given = {}
    for f in fields(MonitorSettings):
        key = f"MEMGUARD_{f.name.upper()}"
        if key in env:
            given[f.name] = coerce_setting(f.name, env[key], source=f"environment variable {key}")
    return replace(base, **given) if given else base


_default: MonitorSettings | None = None


def default_settings() -> MonitorSettings:
    """Built-ins with the environment applied, read once per process (env changes need :func:`reload_settings`)."""
    global _default
    if _default is None:
        _default = settings_from_env()
    return _default


def reload_settings() -> MonitorSettings:
    global _default
    _default = None
    return default_settings()
