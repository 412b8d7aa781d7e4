"""System-wide memory figures, container-aware: the seed's ``get_system_memory_summary``,
``check_memory_threshold`` and ``log_worker_memory_summary``.

"System" here means the memory that can kill this process: inside a container with a cgroup limit, the limit and
the cgroup's usage; elsewhere the host. The seed measured against the host, which made a worker at 95 % of its
container look like it used 10 %.
"""

from __future__ import annotations

import logging
import os
import time

from .cgroup import CgroupMemory, current_cgroup_memory, effective_limit_bytes, host_total_bytes
from .probes import get_probe
from .units import GB, MB

logger = logging.getLogger("pytest_memguard")

_LIMIT_TTL_S = 5.0
_limit_cache: tuple[float, int | None] = (0.0, None)


def cached_effective_limit_bytes() -> int | None:
    """The effective limit, re-read at most every few seconds (limits change rarely; per-task reads would not be
    free)."""
    global _limit_cache
    now = time.monotonic()
    stamp, value = _limit_cache
    if now - stamp > _LIMIT_TTL_S or value is None:
        try:
            value = effective_limit_bytes()
        except Exception:
            value = None
        _limit_cache = (now, value)
    return value


def _container_view(cgroup: CgroupMemory | None, host_total: int | None) -> tuple[int, int] | None:
    """(total, used) bytes of a memory-limited cgroup, its limit capped at the host's RAM; ``None`` outside one.

    The one definition of "the system" inside a container, shared by the log lines and the seed's summary."""
    if cgroup is None or not cgroup.limit_bytes or cgroup.current_bytes is None:
        return None
    total = min(cgroup.limit_bytes, host_total) if host_total else cgroup.limit_bytes
    return total, cgroup.current_bytes


def system_usage() -> dict:
    """``{total_mb, available_mb, used_percent, source}`` of the memory that can kill this process."""
    cgroup = _safe_cgroup()
    view = _container_view(cgroup, host_total_bytes())
    if view is not None:
        total, used = view
        return {
            "total_mb": round(total / MB, 1),
            "available_mb": round(max(total - used, 0) / MB, 1),
            "used_percent": round(100.0 * used / total, 1),
            "source": f"cgroup v{cgroup.version}",
        }
    try:
        import psutil

        vm = psutil.virtual_memory()
        return {
            "total_mb": round(vm.total / MB, 1),
            "available_mb": round(vm.available / MB, 1),
            "used_percent": round(float(vm.percent), 1),
            "source": "host",
        }
    except Exception:
        return {"total_mb": None, "available_mb": None, "used_percent": None, "source": "unknown"}


_USAGE_TTL_S = 1.0
_usage_cache: tuple[float, dict | None] = (0.0, None)


def recent_system_usage(max_age_s: float = _USAGE_TTL_S) -> dict:
    """:func:`system_usage`, re-read at most every ``max_age_s`` per process.

    Why: log lines show ``System=…%`` twice per task, and a fresh reading (psutil plus a few cgroup files) costs
    ~100 µs, more than a no-op Celery task's whole budget. A system-wide percentage a second old is still true.
    The cache is dropped in a forked child (``register_at_fork``) rather than checked against ``os.getpid()`` per
    call: that is a system call, twice per task at INFO."""
    global _usage_cache
    now = time.monotonic()
    stamp, value = _usage_cache
    if value is None or now - stamp > max_age_s:
        value = system_usage()
        _usage_cache = (now, value)
    return value


def _forget_usage_after_fork() -> None:
    global _usage_cache
    _usage_cache = (0.0, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_usage_after_fork)


def _safe_cgroup() -> CgroupMemory | None:
    try:
        return current_cgroup_memory()
    except Exception:
        return None


def percent_of(value: int | float | None, limit: int | float | None) -> float | None:
    """``value`` as a percentage of ``limit``, to 0.1 % (halves up); ``None`` when either is unknown.

    Integer-and-divide, not ``round(x, 1)``: ``round`` is a decimal conversion (~2,600 instructions) and this runs
    on the per-task path (the record's ``process_percent``, every log line's ``Process%``)."""
    if value is None or not limit:
        return None
    return int(1000.0 * value / limit + 0.5) / 10


def process_percent(rss_bytes: int | None) -> float | None:
    """RSS as a percentage of the effective limit (the seed's ``Process%``)."""
    return percent_of(rss_bytes, cached_effective_limit_bytes())


def get_system_memory_summary() -> dict:
    """The seed's summary: ``virtual_memory{total_gb, available_gb, used_gb, percent}``,
    ``swap_memory{total_gb, used_gb, percent}``, plus ``cgroup`` (or ``None``) and ``effective_limit_gb``.

    Inside a memory-limited cgroup ``virtual_memory`` describes the container (its limit and usage), because that
    is what runs out; the host's figures are kept under ``host``.
    """
    import psutil

    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    host = {
        "total_gb": round(vm.total / GB, 2),
        "available_gb": round(vm.available / GB, 2),
        "used_gb": round(vm.used / GB, 2),
        "percent": round(float(vm.percent), 1),
    }
    cgroup = _safe_cgroup()
    virtual = dict(host)
    view = _container_view(cgroup, vm.total)
    if view is not None:
        total, used = view
        virtual = {
            "total_gb": round(total / GB, 2),
            "available_gb": round(max(total - used, 0) / GB, 2),
            "used_gb": round(used / GB, 2),
            "percent": round(100.0 * used / total, 1),
        }
    limit = effective_limit_bytes(cgroup)
    return {
        "virtual_memory": virtual,
        "swap_memory": {
            "total_gb": round(sw.total / GB, 2),
            "used_gb": round(sw.used / GB, 2),
            "percent": round(float(sw.percent), 1),
        },
        "host": host,
        "cgroup": cgroup.as_dict() if cgroup is not None else None,
        "effective_limit_gb": round(limit / GB, 2) if limit else None,
    }


def check_memory_threshold(threshold_mb: float = 3000) -> bool:
    """The seed's check: ``True`` while this process's RSS is *under* ``threshold_mb``; logs a WARNING when not.

    An unreadable RSS counts as under (a probe failure must not page anyone as if memory were exhausted).
    """
    rss = get_probe().rss_bytes()
    if rss is None:
        return True
    rss_mb = rss / MB
    if rss_mb > threshold_mb:
        logger.warning(
            "Memory threshold exceeded: RSS=%.1fMB > %.1fMB (pid %d)",
            rss_mb,
            threshold_mb,
            os.getpid(),
            extra={"memguard": {"event": "threshold", "rss_mb": round(rss_mb, 1), "threshold_mb": threshold_mb}},
        )
        return False
    return True


def log_worker_memory_summary(log: logging.Logger | None = None) -> dict:
    """Log one line about this worker process and the system (the seed's worker summary) and return its figures."""
    log = log or logger
    probe = get_probe()
    rss, vms = probe.rss_vms_bytes()
    usage = system_usage()
    figures = {
        "pid": os.getpid(),
        "rss_mb": round(rss / MB, 1) if rss is not None else None,
        "vms_mb": round(vms / MB, 1) if vms is not None else None,
        "process_percent": process_percent(rss),
        "system": usage,
    }
    log.info(
        "Worker memory summary: pid=%d RSS=%sMB VMS=%sMB, Process%%=%s%%, System=%s%% of %sMB (%s)",
        figures["pid"],
        figures["rss_mb"],
        figures["vms_mb"],
        figures["process_percent"],
        usage["used_percent"],
        usage["total_mb"],
        usage["source"],
        extra={"memguard": {"event": "worker_summary", **figures}},
    )
    return figures
