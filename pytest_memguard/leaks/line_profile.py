"""Line-by-line memory profile of one function with memory-profiler (the ``profile`` extra).

Why optional and lazy: memory-profiler samples RSS on every line through a trace function — tens of times
slower — and is a dependency most users never need. It is imported only when a profile is asked for, and its
absence is a one-line error saying which extra to install.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any


class ProfileUnavailable(RuntimeError):
    """memory-profiler is not installed."""


def profile_function(func: Callable[..., Any], *args: Any, precision: int = 1, **kwargs: Any) -> str:
    """Call ``func(*args, **kwargs)`` once under memory-profiler and return its line-by-line table as text.

    The call's return value is dropped and its exception propagates (the table is lost then: a failing call has
    no complete profile). Works on plain functions; for a Celery task pass ``task.run``.
    """
    try:
        from memory_profiler import LineProfiler, show_results
    except ImportError:
        raise ProfileUnavailable(
            "line-by-line profiles need memory-profiler: pip install 'pytest-memguard[profile]'"
        ) from None
    target = getattr(func, "__wrapped__", func)
    profiler = LineProfiler(backend="psutil")
    profiler.add_function(target)
    profiler.enable_by_count()
    try:
        func(*args, **kwargs)
    finally:
        profiler.disable_by_count()
    out = io.StringIO()
    show_results(profiler, stream=out, precision=precision)
    return out.getvalue()
