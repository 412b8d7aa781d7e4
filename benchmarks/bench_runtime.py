"""Runtime benchmarks: per-task cost of START+FINISH, and spike capture. Ratios are measured side by side in one run.

Run: ``python benchmarks/bench_runtime.py`` (about a minute). Targets (issue 2):
- memguard START+FINISH with defaults <= 10 us per task, flat in heap size, >= 50x cheaper than a seed-style
  monitor at 1 M live GC-tracked objects;
- spike capture: 30/30 of a 300 MiB buffer held 5 ms and of a 20 MiB mmap held 28 ms, within 1 MiB.
"""

from __future__ import annotations

import gc
import logging
import mmap
import statistics
import sys
import time

import psutil

from pytest_memguard.runtime import MemoryMonitor
from pytest_memguard.runtime.probes import get_probe
from pytest_memguard.runtime.units import MB


class SeedStyleMonitor:
    """What the seed's monitor did per task: psutil at each mark, system memory, a GC object count, GC after."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name

    def start_monitoring(self) -> None:
        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        psutil.virtual_memory()
        len(gc.get_objects())

    def finish_monitoring(self) -> dict:
        rss = self.process.memory_info().rss
        self.peak = max(self.peak, rss)
        psutil.virtual_memory()
        len(gc.get_objects())
        gc.collect()
        return {"start": self.start, "finish": rss, "peak": self.peak}


def per_task_us(factory, rounds: int) -> float:
    """Median over 5 batches of the per-task cost of START+FINISH, in microseconds."""
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            monitor = factory()
            monitor.start_monitoring()
            monitor.finish_monitoring()
        batches.append((time.perf_counter() - t0) / rounds * 1e6)
    return statistics.median(batches)


class ProbesOnly:
    """START+FINISH reduced to the four system calls they cannot avoid: reset the mark and read it at start, read
    it and the RSS at finish. Timed by :func:`per_task_us` like a monitor, it is this machine's floor."""

    def __init__(self) -> None:
        self.probe = get_probe()

    def start_monitoring(self) -> None:
        self.probe.reset_hwm()
        self.probe.rss_after_reset()

    def finish_monitoring(self) -> None:
        self.probe.hwm_bytes()
        self.probe.rss_bytes()


def empty_us(rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        pass
    return (time.perf_counter() - t0) / rounds * 1e6


def cost_section(label: str, seed_rounds: int) -> tuple[float, float]:
    ours = per_task_us(lambda: MemoryMonitor("bench.task"), 20_000)
    seed = per_task_us(lambda: SeedStyleMonitor("bench.task"), seed_rounds)
    print(f"  {label:<28} memguard {ours:8.2f} us/task   seed-style {seed:10.1f} us/task   ratio {seed / ours:8.1f}x")
    return ours, seed


def spike_capture(trials: int = 30) -> None:
    probe = get_probe()
    if not probe.hwm_usable:
        print(f"  kernel mark unavailable ({probe.hwm_refusal}); sampling figures only")

    def buffer_300():
        buf = bytearray(300 * MB)
        time.sleep(0.005)
        del buf

    def mmap_20():
        m = mmap.mmap(-1, 20 * MB)
        for off in range(0, 20 * MB, mmap.PAGESIZE):
            m[off] = 1
        time.sleep(0.028)
        m.close()

    for name, work, size in (("300 MiB buffer / 5 ms", buffer_300, 300), ("20 MiB mmap / 28 ms", mmap_20, 20)):
        for mode, kwargs in (("memguard", {}), ("sampled@100ms", {"peak_mode": "sample", "sample_interval_ms": 100})):
            hits, errors = 0, []
            for _ in range(trials):
                with MemoryMonitor("spike", **kwargs) as monitor:
                    work()
                error = monitor.measurement.peak_delta_mb - size
                errors.append(error)
                hits += abs(error) <= 1.0
                time.sleep(0.01)
            print(
                f"  {name:<24} {mode:<14} caught {hits:2d}/{trials} within 1 MiB"
                f"  (median error {statistics.median(errors):+.2f} MiB)"
            )


def main() -> int:
    logging.getLogger("pytest_memguard").setLevel(logging.WARNING)  # production default: INFO lines off
    print(f"Python {sys.version.split()[0]}, peak source: {'kernel-hwm' if get_probe().hwm_usable else 'sampled'}")
    print(f"empty loop overhead {empty_us(100_000):.3f} us/iteration")
    floor = per_task_us(ProbesOnly, 20_000)
    print(f"probe floor (reset, mark, mark, statm, alone): {floor:.2f} us (3 us on the machine of MEASUREMENTS.md)")
    print("Per-task cost of START+FINISH (defaults; INFO logging disabled as in production):")
    small_ours, small_seed = cost_section("small heap", 2_000)
    keep = [[i] for i in range(1_000_000)]  # 1 M GC-tracked lists
    big_ours, big_seed = cost_section(f"{len(gc.get_objects()):,} GC objects", 20)
    del keep
    gc.collect()
    logger = logging.getLogger("pytest_memguard")
    logger.setLevel(logging.INFO)
    handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    with_logs = per_task_us(lambda: MemoryMonitor("bench.task"), 2_000)
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.WARNING)
    print(f"  with INFO log lines formatted (NullHandler): {with_logs:.1f} us/task")
    print(f"flatness: {big_ours / small_ours:.2f}x from small heap to 1 M objects (target ~1x)")
    print(
        f"advantage at 1 M objects: {big_seed / big_ours:.0f}x (target >= 50x); per-task cost {big_ours:.2f} us "
        f"(target <= 10 us), of which {floor:.2f} us are the system calls alone (Python: {big_ours - floor:.2f} us)"
    )
    print("Spike capture (30 trials each):")
    spike_capture()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
