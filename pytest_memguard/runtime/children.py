"""Memory of the processes this process started (multiprocessing, subprocess).

Why opt-in: walking the process tree costs milliseconds, and most work has no children. When asked for, the
children's *private* memory (USS: ``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup``) is sampled
from a background thread. Private, not RSS: a forked child's RSS includes every page it still shares with the
parent, so summing RSS would count the parent's memory once more per child — a false failure, not a measurement.

``RUSAGE_CHILDREN``'s maximum (the largest child the kernel has reaped) catches a child that lived and died between
samples; since it is an RSS figure, the caller subtracts the parent's RSS as the most a forked child can share.
"""

from __future__ import annotations

import resource
import sys

_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
_PRIVATE_KEYS = (b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")


def _private_bytes_from_smaps_rollup(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except OSError:
        return None
    total = 0
    for line in data.splitlines():
        if line.startswith(_PRIVATE_KEYS):
            try:
                total += int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return total


def child_private_bytes(process) -> int | None:
    """USS of one ``psutil.Process``; RSS where private figures cannot be read (other OSes, old kernels)."""
    import psutil

    private = _private_bytes_from_smaps_rollup(process.pid)
    if private is not None:
        return private
    try:
        return int(process.memory_full_info().uss)
    except (psutil.Error, AttributeError):
        pass
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return None


def children_private_bytes() -> int | None:
    """Sum of the private memory of every live descendant of this process."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return None
    total = 0
    for child in children:
        value = child_private_bytes(child)  # None: exited between listing and reading
        if value is not None:
            total += value
    return total


def reaped_children_maxrss_bytes() -> int | None:
    """The largest peak RSS among children this process has waited for (kernel-exact, never reset)."""
    try:
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * _MAXRSS_UNIT
    except (OSError, ValueError):
        return None
