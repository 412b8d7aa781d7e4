"""Memory of the processes this process started (multiprocessing, subprocess).

Why opt-in: walking the process tree costs milliseconds, and most work has no children. When asked for, the
children's RSS is sampled from a background thread, and ``RUSAGE_CHILDREN``'s maximum (the largest child the
kernel has reaped) catches a child that lived and died between samples.
"""

from __future__ import annotations

import resource
import sys

_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def children_rss_bytes() -> int | None:
    """Sum of the current RSS of every live descendant of this process."""
    import psutil

    total = 0
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited or a zombie between listing and reading
            continue
    return total


def reaped_children_maxrss_bytes() -> int | None:
    """The largest peak RSS among children this process has waited for (kernel-exact, never reset)."""
    try:
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * _MAXRSS_UNIT
    except (OSError, ValueError):
        return None
