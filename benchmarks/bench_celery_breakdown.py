"""Where the per-task cost of instrumentation goes, measured in context: Celery's own tracer, with parts of memguard
stubbed out one at a time.

    python benchmarks/bench_celery_breakdown.py [--tasks 2000] [--batches 7] [--reps 3] [--instructions]

Why in context: a part timed alone in a hot loop (``timeit``) stays in the CPU's caches; run once per ~130 µs of
Celery's own code, as in a worker, it costs two to four times more. Each variant runs in a fresh interpreter,
``fixtures.noop`` through ``celery.app.trace.build_tracer`` (results stored in the embedded ``file://`` backend,
logging at WARNING), and reports the minimum per-task time over its batches; variants are interleaved ``--reps``
times; the median and the minimum (the least disturbed run, on a noisy machine) are printed, each with its difference
to the uninstrumented baseline's. The stubs replace parts of
memguard *in the benchmark's child process only*:

- ``dispatch``: memguard not instrumented, two receivers that do nothing connected to task_prerun/task_postrun
  (what Celery's dispatch of the two signals costs any instrumentation built on them);
- ``signals``: receivers connected, the task's start a no-op (that dispatch to memguard's receivers);
- ``no-monitor``: everything but the monitor (its start returns at once, its finish returns fixed figures);
- ``no-syscalls``: the monitor without its system calls (probe readings are constants);
- ``no-reset``: the monitor without the ``clear_refs`` reset;
- ``no-records``: everything but the record (``memguard_records=False``);
- ``full``: what a worker runs.
``no-monitor`` … ``no-records`` run with records off, so their differences isolate the monitor's parts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "baseline": {"MEMGUARD_INSTRUMENT": "0"},
    "dispatch": {"MEMGUARD_INSTRUMENT": "0", "BREAKDOWN_STUB": "dispatch"},
    "signals": {"MEMGUARD_RECORDS": "0", "BREAKDOWN_STUB": "signals"},
    "no-monitor": {"MEMGUARD_RECORDS": "0", "BREAKDOWN_STUB": "no-monitor"},
    "no-syscalls": {"MEMGUARD_RECORDS": "0", "BREAKDOWN_STUB": "no-syscalls"},
    "no-reset": {"MEMGUARD_RECORDS": "0", "BREAKDOWN_STUB": "no-reset"},
    "no-records": {"MEMGUARD_RECORDS": "0"},
    "full": {},
}


def apply_stub(stub: str) -> None:
    """Replace one part of memguard in this (child) process; see the module docstring."""
    from pytest_memguard.celery import lifecycle
    from pytest_memguard.runtime import monitor, probes

    if stub == "dispatch":
        from celery import signals

        def nothing(**_):
            return None

        signals.task_prerun.connect(nothing, weak=False, dispatch_uid="breakdown.prerun")
        signals.task_postrun.connect(nothing, weak=False, dispatch_uid="breakdown.postrun")
    elif stub == "signals":
        lifecycle.Instrumentation.start = lambda self, task, task_id: None
    elif stub == "no-monitor":
        fixed = monitor.MemoryMonitor("stub")
        fixed.start_monitoring()
        figures = fixed.finish_monitoring()
        monitor.MemoryMonitor.start_monitoring = lambda self: self
        monitor.MemoryMonitor.finish_monitoring = lambda self, outcome="FINISH": dict(figures)
    elif stub in ("no-syscalls", "no-reset"):
        probes.ProcessProbe.reset_hwm = lambda self: True
        if stub == "no-syscalls":
            constant = 100 << 20
            probes.ProcessProbe.rss_bytes = lambda self: constant
            probes.ProcessProbe.rss_after_reset = lambda self: constant
            probes.ProcessProbe.hwm_bytes = lambda self: constant
    elif stub:
        raise SystemExit(f"unknown stub {stub!r}")


def run_child(tasks: int, batches: int) -> float:
    """Inside the child interpreter: apply this variant's stub, then time the tracer exactly as
    ``bench_celery_tracer.py`` does (WARNING, solo); the least disturbed batch, in seconds per task."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_celery_tracer import run_variant

    apply_stub(os.environ.get("BREAKDOWN_STUB", ""))
    return min(run_variant(tasks, batches, profile=False, loglevel="WARNING")["per_task_us"]) / 1e6


def count_variant(variant: str) -> float:
    """Instructions per task of one variant, under callgrind (see ``bench_celery_tracer.instructions_per_task``)."""
    from bench_celery_tracer import child_env, instructions_per_task

    env = child_env(VARIANTS[variant].get("MEMGUARD_INSTRUMENT", "1") == "1", **VARIANTS[variant])
    return instructions_per_task(env, [sys.executable, __file__, "--child"])


def spawn(variant: str, tasks: int, batches: int) -> float:
    env = {
        **os.environ,
        "MEMGUARD_INSTRUMENT": "1",
        "MEMGUARD_FS_FOLDER": tempfile.mkdtemp(prefix="memguard-breakdown-"),
        "MEMGUARD_QUEUE": f"breakdown-{uuid.uuid4().hex[:8]}",
        **VARIANTS[variant],
    }
    argv = [sys.executable, __file__, "--child", "--tasks", str(tasks), "--batches", str(batches)]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per task of each variant under callgrind (valgrind) instead of timing",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child and args.count is not None:
        from bench_celery_tracer import run_count

        apply_stub(os.environ.get("BREAKDOWN_STUB", ""))
        run_count(args.count)
        return 0
    if args.child:
        print(run_child(args.tasks, args.batches))
        return 0
    if args.instructions:
        from bench_celery_tracer import require_valgrind

        require_valgrind()
        counts = {name: count_variant(name) for name in VARIANTS}
        print("instructions per no-op task under callgrind (WARNING, solo)")
        for name, count in counts.items():
            print(f"{name:12s} {count:>10,.0f} {count - counts['baseline']:>+10,.0f}")
        return 0
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.reps):
        for name in VARIANTS:
            times[name].append(spawn(name, args.tasks, args.batches) * 1e6)
    base, base_min = statistics.median(times["baseline"]), min(times["baseline"])
    print(f"{args.tasks} no-op tasks x {args.batches} batches, {args.reps} interleaved runs (us/task)")
    print(f"{'':12s} {'median':>7s} {'vs base':>7s}   {'min':>7s} {'vs base':>7s}   runs")
    for name, values in times.items():
        median, least = statistics.median(values), min(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:12s} {median:7.1f} {median - base:+7.1f}   {least:7.1f} {least - base_min:+7.1f}   [{runs}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
