import logging
import subprocess
import sys

from pytest_memguard.runtime import check_memory_threshold, get_system_memory_summary, log_worker_memory_summary
from pytest_memguard.runtime.cgroup import effective_limit_bytes
from pytest_memguard.runtime.units import GB


def test_system_summary_keeps_the_seed_keys_and_is_container_aware():
    summary = get_system_memory_summary()
    assert set(summary["virtual_memory"]) == {"total_gb", "available_gb", "used_gb", "percent"}
    assert set(summary["swap_memory"]) == {"total_gb", "used_gb", "percent"}
    assert 0 < summary["virtual_memory"]["percent"] < 100
    assert summary["effective_limit_gb"] == round(effective_limit_bytes() / GB, 2)
    assert summary["virtual_memory"]["total_gb"] <= summary["host"]["total_gb"]


def test_check_memory_threshold_is_true_while_under(caplog):
    caplog.set_level(logging.WARNING, logger="pytest_memguard")
    assert check_memory_threshold(threshold_mb=1_000_000) is True
    assert check_memory_threshold(threshold_mb=1) is False
    assert "Memory threshold exceeded" in caplog.text


def test_worker_summary_logs_one_line_with_figures(caplog):
    caplog.set_level(logging.INFO, logger="pytest_memguard")
    figures = log_worker_memory_summary()
    assert figures["rss_mb"] > 0
    assert "Worker memory summary" in caplog.text
    assert caplog.records[-1].memguard["event"] == "worker_summary"


def test_the_runtime_never_imports_pytest():
    code = (
        "import sys, pytest_memguard, pytest_memguard.runtime\n"
        "m = pytest_memguard.MemoryMonitor('x'); m.start_monitoring(); m.finish_monitoring()\n"
        "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
