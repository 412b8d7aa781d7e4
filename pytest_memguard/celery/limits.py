"""``max_memory_per_child``: the right ``worker_max_memory_per_child`` for a container.

Celery reads ``worker_max_memory_per_child`` in **KiB** (resident memory, checked after each task; the child is
replaced once it is over). The seed's guide multiplied megabytes by 1000 and mixed decimal and binary units; here
every size goes through :func:`pytest_memguard.runtime.units.parse_size` ("4G", "4096M", "512MiB": binary units)
and the result is an integer number of KiB.
"""

from __future__ import annotations

import os

from ..runtime.units import KB, SizeError, parse_size


def max_memory_per_child(
    limit: str | int | float | None = None,
    concurrency: int | None = None,
    *,
    overhead: str | int | float = "256MiB",
    headroom_percent: float = 10.0,
) -> int:
    """KiB for ``worker_max_memory_per_child``: ``(limit - overhead) * (1 - headroom) / concurrency``.

    - ``limit``: the container's memory limit (size string or MB number); ``None`` uses the effective limit found
      (cgroup, else host RAM).
    - ``concurrency``: pool children (default: CPU count, as Celery's).
    - ``overhead``: what is not a child: the worker's main process, broker client, sidecars (default 256 MiB).
    - ``headroom_percent``: kept free because the check runs *after* a task: the child that crosses the line is
      still holding its task's peak at that moment.
    """
    if limit is None:
        from ..runtime.cgroup import effective_limit_bytes

        limit_bytes = effective_limit_bytes()
        if not limit_bytes:
            raise SizeError("no memory limit given and none found (cgroup or host); pass limit='4G'")
    else:
        limit_bytes = parse_size(limit, "MB", what="limit")
    overhead_bytes = parse_size(overhead, "MB", what="overhead")
    if concurrency is None:
        concurrency = os.cpu_count() or 1
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer (pool children), got {concurrency!r}")
    if not 0 <= headroom_percent < 100:
        raise ValueError(f"headroom_percent must be in [0, 100), got {headroom_percent!r}")
    usable = limit_bytes - overhead_bytes
    if usable <= 0:
        raise SizeError(
            f"overhead {overhead!r} leaves nothing of limit {limit!r} for the pool; lower overhead or raise the limit"
        )
    per_child = usable * (1 - headroom_percent / 100.0) / concurrency
    kib = int(per_child // KB)
    if kib < 1024:
        raise SizeError(
            f"{kib} KiB per child is too small to run a Python task (limit {limit!r}, concurrency {concurrency}); "
            "lower concurrency or raise the limit"
        )
    return kib
