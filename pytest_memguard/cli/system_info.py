"""The report's System section: host memory and swap, and the cgroup (container) view from inside.

Why both: ``free`` describes the host, while the kernel kills a worker by its cgroup's ``memory.max`` — what
``docker stats`` shows from outside. Figures are bytes, as read, so JSON consumers get exact numbers;
:mod:`pytest_memguard.runtime.system` offers the rounded GB summary that the seed's API returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from ..runtime.cgroup import current_cgroup_memory, effective_limit_bytes, host_total_bytes
from ..runtime.system import percent_of


@dataclass
class CgroupSection:
    version: int
    path: str
    current_bytes: int | None  # memory.current (v2) / memory.usage_in_bytes (v1)
    limit_bytes: int | None  # memory.max / memory.limit_in_bytes, tightest up the tree; None: no limit
    peak_bytes: int | None  # memory.peak / memory.max_usage_in_bytes
    oom_kill: int | None
    used_percent: float | None  # current of limit; None without a limit


@dataclass
class SystemSection:
    total_bytes: int | None
    available_bytes: int | None
    used_bytes: int | None
    used_percent: float | None
    swap_total_bytes: int | None
    swap_used_bytes: int | None
    swap_percent: float | None
    effective_limit_bytes: int | None
    limit_source: str  # "cgroup" or "host": which of the two is the effective limit
    cgroup: CgroupSection | None
    error: str | None = None

    def pressure_percent(self) -> float | None:
        """The higher of host and cgroup usage: whichever is closer to an OOM kill (``system=`` threshold)."""
        values = [v for v in (self.used_percent, self.cgroup.used_percent if self.cgroup else None) if v is not None]
        return max(values) if values else None


def collect_system() -> SystemSection:
    """Read host memory, swap and this process's cgroup. Never raises: what cannot be read is ``None``."""
    error = None
    try:
        vm = psutil.virtual_memory()
        total, available, used, percent = int(vm.total), int(vm.available), int(vm.used), round(float(vm.percent), 1)
    except Exception as exc:  # pragma: no cover - psutil reads /proc/meminfo, present on every Linux
        total = available = used = percent = None
        error = f"cannot read host memory: {exc}"
    try:
        sw = psutil.swap_memory()
        swap_total, swap_used, swap_percent = int(sw.total), int(sw.used), round(float(sw.percent), 1)
    except Exception:  # pragma: no cover - as above
        swap_total = swap_used = swap_percent = None
    try:
        cg = current_cgroup_memory()
    except Exception:  # pragma: no cover - cgroup readers return None for unreadable files
        cg = None
    cgroup = None
    if cg is not None:
        cgroup = CgroupSection(
            version=cg.version,
            path=cg.path,
            current_bytes=cg.current_bytes,
            limit_bytes=cg.limit_bytes,
            peak_bytes=cg.peak_bytes,
            oom_kill=cg.oom_kill,
            used_percent=percent_of(cg.current_bytes, cg.limit_bytes),
        )
    host_total = total or host_total_bytes()
    limit = effective_limit_bytes(cg, host_total=host_total)
    cgroup_limits = (
        cg is not None and cg.limit_bytes is not None and (host_total is None or cg.limit_bytes < host_total)
    )
    return SystemSection(
        total_bytes=total,
        available_bytes=available,
        used_bytes=used,
        used_percent=percent,
        swap_total_bytes=swap_total,
        swap_used_bytes=swap_used,
        swap_percent=swap_percent,
        effective_limit_bytes=limit,
        limit_source="cgroup" if cgroup_limits else "host",
        cgroup=cgroup,
        error=error,
    )
