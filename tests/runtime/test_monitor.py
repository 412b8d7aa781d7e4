"""MemoryMonitor against real allocations: bytearrays, mmaps, lists of objects and forked children."""

import contextvars
import gc
import logging
import mmap
import multiprocessing
import os
import re
import threading
import time

import pytest

import pytest_memguard
from pytest_memguard.runtime import MemoryMonitor, checkpoint, current_monitor
from pytest_memguard.runtime.probes import PEAK_SOURCE_KERNEL, get_probe
from pytest_memguard.runtime.units import MB

KERNEL = get_probe().hwm_usable
needs_kernel_mark = pytest.mark.skipif(not KERNEL, reason="the kernel refuses /proc/self/clear_refs here")


def spike_bytearray(mb: int, hold_s: float) -> None:
    buf = bytearray(mb * MB)  # zero-filled: every page is touched
    time.sleep(hold_s)
    del buf


def spike_mmap(mb: int, hold_s: float) -> None:
    m = mmap.mmap(-1, mb * MB)
    for offset in range(0, mb * MB, mmap.PAGESIZE):
        m[offset] = 1
    time.sleep(hold_s)
    m.close()


@needs_kernel_mark
def test_a_300mib_buffer_living_5ms_is_seen_within_1mib():
    with MemoryMonitor("spike") as monitor:
        spike_bytearray(300, 0.005)
    m = monitor.measurement
    assert m.peak_source == PEAK_SOURCE_KERNEL
    assert abs(m.peak_delta_mb - 300) < 1.0, m
    assert m.delta_mb < 5


@needs_kernel_mark
def test_a_20mib_mmap_living_28ms_is_seen_every_time():
    seen = []
    for _ in range(10):
        with MemoryMonitor("mmap-spike") as monitor:
            spike_mmap(20, 0.028)
        seen.append(monitor.measurement.peak_delta_mb)
    assert all(abs(v - 20) < 1.0 for v in seen), seen


def test_an_untouched_mmap_costs_nothing_resident():
    with MemoryMonitor("untouched") as monitor:
        m = mmap.mmap(-1, 500 * MB)
        m.close()
    assert monitor.measurement.peak_delta_mb < 2


def test_a_kept_list_of_objects_shows_in_delta_and_peak():
    with MemoryMonitor("objects", enable_gc=False) as monitor:
        kept = [object() for _ in range(500_000)] + [str(i) for i in range(200_000)]
    m = monitor.measurement
    assert m.delta_mb > 20  # 700k small objects plus list storage
    assert m.peak_delta_mb >= m.delta_mb - 0.5
    del kept


@needs_kernel_mark
def test_nested_monitors_each_keep_their_own_true_peak():
    enclosing = 1 if current_monitor() is not None else 0  # e.g. the pytest plugin's own monitor of this test
    with MemoryMonitor("test-level") as outer:
        with MemoryMonitor("task-1") as t1:
            spike_bytearray(200, 0.002)
        with MemoryMonitor("task-2") as t2:
            spike_bytearray(50, 0.002)
        with MemoryMonitor("task-3") as t3:
            # Over glibc's largest mmap threshold (32 MiB), so it cannot reuse heap left resident by earlier tests.
            kept = bytearray(40 * MB)
    assert abs(t1.measurement.peak_delta_mb - 200) < 1
    assert abs(t2.measurement.peak_delta_mb - 50) < 1
    assert abs(t3.measurement.peak_delta_mb - 40) < 1
    # The outer monitor's peak is the 200 MiB spike of task-1, though two resets happened after it.
    assert abs(outer.measurement.peak_delta_mb - 200) < 2
    assert outer.measurement.overlapped == 3 + enclosing
    assert t1.measurement.overlapped == 1 + enclosing
    del kept


def test_forced_sampler_reports_its_source_and_catches_a_long_spike():
    with MemoryMonitor("sampled", peak_mode="sample", sample_interval_ms=5) as monitor:
        spike_bytearray(100, 0.2)
    m = monitor.measurement
    assert m.peak_source == "sampled@5ms"
    assert abs(m.peak_delta_mb - 100) < 2


def test_sampler_stops_when_no_monitor_needs_it():
    before = {t.name for t in threading.enumerate()}
    with MemoryMonitor("sampled", peak_mode="sample"):
        assert any(t.name == "memguard-sampler" for t in threading.enumerate())
    for _ in range(100):
        if not any(t.name == "memguard-sampler" for t in threading.enumerate()):
            break
        time.sleep(0.01)
    assert "memguard-sampler" not in {t.name for t in threading.enumerate()} - before


def test_heap_figures_when_traced_are_exact_for_python_allocations():
    with MemoryMonitor("heap", trace_heap=True) as outer:
        with MemoryMonitor("heap-inner", trace_heap=True) as inner:
            transient = [bytes(1000) for _ in range(20_000)]  # ~20 MB of Python objects
            del transient
        kept = [bytes(1000) for _ in range(5_000)]
    assert inner.measurement.heap["peak_delta_mb"] > 19
    assert inner.measurement.heap["delta_mb"] < 1
    assert outer.measurement.heap["peak_delta_mb"] > 19  # folded through the inner reset_peak()
    assert 4.5 < outer.measurement.heap["delta_mb"] < 6
    del kept


def _child_touches(mb: int, hold_s: float) -> None:
    spike_bytearray(mb, hold_s)


def test_children_count_when_asked_a_forked_child_touching_200mb_for_100ms():
    ctx = multiprocessing.get_context("fork")
    with MemoryMonitor("with-children", include_children=True) as monitor:
        child = ctx.Process(target=_child_touches, args=(200, 0.1))
        child.start()
        child.join(30)
    assert child.exitcode == 0
    children = monitor.measurement.children
    assert children is not None
    # Its 200 MiB, plus the few MiB a forked Python child copies on write (refcounts, its own imports).
    assert 199 < children["peak_mb"] < 240, children
    # The parent's own peak does not include the child.
    assert monitor.measurement.peak_delta_mb < 50


def _idle(hold_s: float) -> None:
    time.sleep(hold_s)


def test_an_idle_forked_child_does_not_count_the_pages_it_shares_with_its_parent():
    ballast = bytearray(80 * MB)  # resident in the parent, shared copy-on-write with the child
    ctx = multiprocessing.get_context("fork")
    with MemoryMonitor("idle-child", include_children=True) as monitor:
        child = ctx.Process(target=_idle, args=(0.2,))
        child.start()
        child.join(30)
    assert child.exitcode == 0
    # Counted by RSS this child would weigh the parent's whole resident size (> 80 MiB of ballast alone); by private
    # memory only what it copied on write: Python touches refcounts, so a few MiB to a few tens, not the ballast.
    assert monitor.measurement.children["peak_mb"] < 40, monitor.measurement.children
    del ballast


def test_checkpoints_record_time_rss_and_peak_and_are_reachable_from_anywhere():
    def library_code():
        checkpoint("deep-inside")

    assert contextvars.Context().run(checkpoint, "nothing-running") is None
    with MemoryMonitor("phases") as monitor:
        assert current_monitor() is monitor
        buf = bytearray(40 * MB)
        monitor.checkpoint("after_alloc")
        library_code()
        del buf
    assert current_monitor() is not monitor
    labels = [c["label"] for c in monitor.measurement.checkpoints]
    assert labels == ["after_alloc", "deep-inside"]
    first = monitor.measurement.checkpoints[0]
    assert first["rss_mb"] - monitor.measurement.start_mb > 39
    assert first["time_s"] >= 0


def test_the_top_level_checkpoint_is_the_runtime_one():
    assert pytest_memguard.checkpoint is checkpoint


def test_finish_returns_the_seed_keys_and_more():
    monitor = MemoryMonitor(task_name="pkg.tasks.process_document")
    monitor.start_monitoring()
    result = monitor.finish_monitoring()
    for key in ("task_name", "start_mb", "finish_mb", "peak_mb", "delta_mb", "peak_delta_mb", "peak_source"):
        assert key in result
    assert result["task_name"] == "pkg.tasks.process_document"
    assert result["peak_mb"] >= result["finish_mb"] > 0
    # A second finish returns the same figures rather than starting over.
    assert monitor.finish_monitoring() == result


def test_log_lines_keep_the_seed_format_and_carry_structured_fields(caplog):
    caplog.set_level(logging.INFO, logger="pytest_memguard")
    with MemoryMonitor("pkg.tasks.process_document", count_gc_objects=True) as monitor:
        monitor.checkpoint("after_chunking")
    lines = [r.getMessage() for r in caplog.records]
    number = r"[0-9]+\.[0-9]"
    assert re.fullmatch(
        rf"Memory \[pkg\.tasks\.process_document\] START: RSS={number}MB \(peak={number}MB\), "
        rf"Process%={number}%, System={number}%, GC objects=[0-9,]+",
        lines[0],
    ), lines[0]
    assert "checkpoint:after_chunking: RSS=" in lines[1]
    assert re.fullmatch(
        rf"Memory \[pkg\.tasks\.process_document\] FINISH \(delta=[+-]{number}MB, peak={number}MB\): "
        rf"RSS={number}MB \(peak={number}MB\), Process%={number}%, System={number}%, GC objects=[0-9,]+",
        lines[2],
    ), lines[2]
    finish = caplog.records[2].memguard
    assert finish["event"] == "finish" and finish["peak_delta_mb"] is not None
    assert [r.memguard["event"] for r in caplog.records] == ["start", "checkpoint", "finish"]
    # Each figure is formatted once and reused: the same text wherever the same number appears.
    start_rss, start_peak = re.search(r"RSS=(\S+) \(peak=(\S+)\)", lines[0]).groups()
    assert start_rss == start_peak  # at START the fresh peak is the RSS
    label_peak, line_peak = re.search(r"peak=(\S+)\): RSS=\S+ \(peak=(\S+)\)", lines[2]).groups()
    assert label_peak == line_peak == f"{finish['peak_mb']:.1f}MB"
    for record in caplog.records:  # System= is the cached reading's own text, not a re-formatted number
        assert re.search(r"System=([^%]+)%", record.getMessage()).group(1) == str(record.memguard["system_percent"])


def test_gc_objects_are_not_counted_in_log_lines_by_default(caplog):
    caplog.set_level(logging.INFO, logger="pytest_memguard")
    with MemoryMonitor("cheap"):
        pass
    assert all("GC objects" not in r.getMessage() for r in caplog.records)


def test_threshold_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="pytest_memguard")
    with MemoryMonitor("hungry", warn_peak_mb=1, warn_process_percent=0.0001):
        pass
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("high peak" in m for m in messages)
    assert any("high process usage" in m for m in messages)


def test_env_var_defaults(monkeypatch):
    from pytest_memguard.runtime.config import SettingError, settings_from_env

    settings = settings_from_env({"MEMGUARD_WARN_PEAK_MB": "250", "MEMGUARD_GC_POLICY": "always"})
    assert settings.warn_peak_mb == 250 and settings.gc_policy == "always"
    with pytest.raises(SettingError, match="MEMGUARD_TRACE_HEAP"):
        settings_from_env({"MEMGUARD_TRACE_HEAP": "maybe"})
    with pytest.raises(SettingError, match="gc_policy"):
        MemoryMonitor("x", gc_policy="sometimes")
    with pytest.raises(SettingError, match="unknown memguard setting"):
        MemoryMonitor("x", colour="blue")


class Cycle:
    def __init__(self):
        self.me = self
        self.payload = bytearray(MB)


def test_gc_policy_growth_collects_cyclic_garbage_once_it_piles_up():
    MemoryMonitor("reference").force_garbage_collection(log_result=False)  # growth is measured from here
    gc.disable()
    try:
        records = []
        for _ in range(6):
            with MemoryMonitor("cyclic", gc_growth_mb=16) as monitor:
                for _ in range(8):
                    Cycle()  # 8 MiB of unreachable cycles per run
            records.append(monitor.measurement.gc)
    finally:
        gc.enable()
    collected = [r for r in records if r["collected"]]
    assert collected, records  # bounded: collected before 48 MiB of garbage piled up
    assert all(r["objects_collected"] >= 16 for r in collected), records
    assert not records[0]["collected"]  # the first 8 MiB is under the threshold


def test_gc_policies_always_and_never():
    with MemoryMonitor("always", gc_policy="always") as always:
        pass
    assert always.measurement.gc["collected"] is True
    with MemoryMonitor("off", enable_gc=False) as off:
        pass
    assert off.measurement.gc == {"policy": "never", "collected": False}


def test_force_garbage_collection_keys_and_honest_counts():
    monitor = MemoryMonitor("gc")
    for _ in range(100):
        Cycle()
    stats = monitor.force_garbage_collection()
    assert set(stats) >= {"before_mb", "after_mb", "freed_mb", "objects_collected", "collections_by_generation"}
    assert stats["objects_collected"] >= 100
    assert set(stats["collections_by_generation"]) == {"gen0", "gen1", "gen2"}


def test_get_memory_info_has_the_seed_shape():
    info = MemoryMonitor("info").get_memory_info()
    assert set(info) == {"timestamp", "task_name", "process", "system", "gc", "cgroup"}
    assert set(info["process"]) == {"pid", "rss_mb", "vms_mb", "percent", "peak_mb"}
    assert {"total_mb", "available_mb", "used_percent"} <= set(info["system"])
    assert set(info["gc"]) == {"collections", "objects"}
    assert info["process"]["pid"] == os.getpid()
    assert info["gc"]["objects"] > 1000
    if info["cgroup"] is not None:  # this machine runs the tests inside a memory cgroup
        assert info["cgroup"]["current_bytes"] > 0 and info["cgroup"]["version"] in (1, 2)


def test_decorator_gives_a_fresh_monitor_per_call():
    @MemoryMonitor()
    def allocate(mb):
        return len(bytearray(mb * MB))

    assert allocate(10) == 10 * MB
    first = allocate.memory
    assert first.task_name.endswith("allocate")
    allocate(1)
    assert allocate.memory is not first


def test_a_fault_inside_monitoring_never_reaches_the_work(caplog, monkeypatch):
    from pytest_memguard.runtime import monitor as monitor_module

    def broken():
        raise RuntimeError("cgroup fs vanished")

    monkeypatch.setattr(monitor_module, "system_usage", broken)
    caplog.set_level(logging.INFO, logger="pytest_memguard")
    calls = []

    def listener(event, payload):
        calls.append(event)
        raise ValueError("listener bug")

    with MemoryMonitor("faulty", on_event=listener) as monitor:
        monitor.checkpoint("x")
        result = sum(range(10))
    assert result == 45
    assert calls == ["start", "checkpoint", "finish"]
    assert monitor.measurement.errors  # the faults are recorded on the figures
    warnings = [r for r in caplog.records if "monitoring fault" in r.getMessage()]
    assert len(warnings) == 1  # logged once per monitor, not once per fault


def test_concurrent_monitors_in_threads_do_not_share_state():
    results = {}

    def work(name, mb):
        with MemoryMonitor(name, enable_gc=False) as monitor:
            buf = bytearray(mb * MB)
            monitor.checkpoint("held")
            time.sleep(0.05)
            del buf
        results[name] = monitor.measurement

    threads = [threading.Thread(target=work, args=(f"t{i}", 10 * (i + 1))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(results) == {"t0", "t1", "t2", "t3"}
    for name, m in results.items():
        assert m.task_name == name
        assert [c["label"] for c in m.checkpoints] == ["held"]
        assert m.overlapped >= 1  # the record says the process was shared
    biggest = max(r.peak_mb for r in results.values())
    assert biggest - min(r.start_mb for r in results.values()) >= 39


def test_probe_follows_a_forked_child():
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            buf = bytearray(80 * MB)
            os.write(writer, str(get_probe().rss_bytes() - len(buf)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    child_rss_minus_buf = int(os.read(reader, 64))
    os.waitpid(pid, 0)
    os.close(reader)
    parent_rss = get_probe().rss_bytes()
    # The child read its own statm (it saw its 80 MiB); a stale descriptor would have read the parent's.
    assert child_rss_minus_buf < parent_rss + 8 * MB
    assert child_rss_minus_buf > 0


CHILD_SPIKE = """
import json
from pytest_memguard.runtime import MemoryMonitor
from pytest_memguard.runtime.probes import get_probe
with MemoryMonitor("child") as m:
    buf = bytearray(60 * 2**20)
    del buf
print(json.dumps({"peak_delta_mb": m.measurement.peak_delta_mb, "status": get_probe()._use_status_for_hwm,
                  "source": m.measurement.peak_source}))
"""


@needs_kernel_mark
def test_a_process_started_by_a_large_parent_still_measures_its_own_true_peak():
    # The kernel keeps the replaced image's high-water mark in getrusage after exec: a worker launched by a big
    # process reads that figure for ever. The probe notices and reads VmHWM instead.
    import json
    import subprocess
    import sys

    ballast = bytearray(400 * MB)
    out = subprocess.run([sys.executable, "-c", CHILD_SPIKE], capture_output=True, text=True, timeout=60, check=True)
    del ballast
    figures = json.loads(out.stdout)
    assert figures["source"] == PEAK_SOURCE_KERNEL
    assert abs(figures["peak_delta_mb"] - 60) < 1, figures


def test_a_long_lived_outer_monitor_stays_small_around_many_tasks():
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()
    with MemoryMonitor("worker-lifetime") as outer:
        for _ in range(200):  # warm caches before measuring
            with MemoryMonitor("task"):
                pass
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                with MemoryMonitor("task"):
                    pass
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            if not was_tracing:
                tracemalloc.stop()
    assert outer.measurement.overlapped >= 20_200
    assert grown < 64 * 1024, grown  # O(1): not one remembered id per task


def test_start_rss_read_through_the_fresh_mark_is_the_current_rss_not_the_old_peak():
    probe = get_probe()
    if not probe.hwm_usable:
        pytest.skip(f"the kernel mark cannot be reset here: {probe.hwm_refusal}")
    buf = bytearray(200 * MB)  # raise the mark well above what stays resident
    del buf
    assert probe.hwm_bytes() >= probe.rss_bytes() + 150 * MB
    probe.reset_hwm()
    after_reset, statm = probe.rss_after_reset(), probe.rss_bytes()
    assert abs(after_reset - statm) <= 1 * MB
    with MemoryMonitor("fresh") as monitor:
        pass
    m = monitor.measurement
    assert abs(m.start_mb - m.finish_mb) < 1
    # MB figures are exact (bytes / 2**20), not rounded: start_mb * 2**20 is a whole number of KiB.
    assert (m.start_mb * MB) % 1024 == 0
