"""The measurement runtime: probes, ``MemoryMonitor`` and system figures. Shipped to production; never imports
pytest (a test in the suite checks that)."""

from .cgroup import CgroupMemory, current_cgroup_memory, effective_limit_bytes
from .config import MonitorSettings, SettingError, default_settings, reload_settings, settings_from_env
from .monitor import Measurement, MemoryMonitor, checkpoint, current_monitor
from .system import check_memory_threshold, get_system_memory_summary, log_worker_memory_summary
from .units import MB, SizeError, format_mb, parse_size, parse_size_mb

__all__ = [
    "MB",
    "CgroupMemory",
    "Measurement",
    "MemoryMonitor",
    "MonitorSettings",
    "SettingError",
    "SizeError",
    "check_memory_threshold",
    "checkpoint",
    "current_cgroup_memory",
    "current_monitor",
    "default_settings",
    "effective_limit_bytes",
    "format_mb",
    "get_system_memory_summary",
    "log_worker_memory_summary",
    "parse_size",
    "parse_size_mb",
    "reload_settings",
    "settings_from_env",
]
