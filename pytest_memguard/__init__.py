"""pytest-memguard: memory budgets, regression gates and leak hunting for Celery tasks and any Python code.

The names here are the runtime's (safe to import in production: no pytest). The pytest plugin lives in
:mod:`pytest_memguard.plugin`, the Celery integration in :mod:`pytest_memguard.celery`.
"""

from .runtime import (
    MemoryMonitor,
    check_memory_threshold,
    checkpoint,
    current_monitor,
    get_system_memory_summary,
    log_worker_memory_summary,
    parse_size,
)

__version__ = "0.1.0"

__all__ = [
    "MemoryMonitor",
    "__version__",
    "check_memory_threshold",
    "checkpoint",
    "current_monitor",
    "get_system_memory_summary",
    "log_worker_memory_summary",
    "parse_size",
]
