"""Per-task cost of instrumentation on Celery's own task path, in-process: no broker, no worker loop, no polling.

    python benchmarks/bench_celery_tracer.py [--tasks 2000] [--batches 7] [--loglevel WARNING] [--pool prefork]
        [--profile] [--instructions]

Builds the tracer a worker builds for ``fixtures.noop`` (``celery.app.trace.build_tracer``, not eager: the result
is stored in the embedded ``file://`` backend, signals fire, logging at ``--loglevel`` goes to a file:
WARNING, what ``celery worker`` runs at without ``-l``, or INFO) and calls it in a loop,
once with ``MEMGUARD_INSTRUMENT=0`` and once with ``=1``, each variant in its own fresh interpreter (the app is
instrumented at import). Prints the minimum per-task time over the batches of each variant (the least disturbed
batch on a noisy machine), wall clock and this process's CPU time (which other processes on the machine disturb
less), and their difference; ``--profile`` prints the instrumented variant's cProfile top.
``--instructions`` counts instructions per task under callgrind instead (needs valgrind): deterministic, where this
VM's wall times move by tens of percent between runs.
``bench_celery_overhead.py`` measures the same through a real worker, with its noise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_task_call(loglevel: str, pool: str = "solo"):
    """Inside the child interpreter: a function running ``fixtures.noop`` once through the tracer a worker builds."""
    import logging

    sys.path.insert(0, str(ROOT))
    log_file = os.path.join(os.environ["MEMGUARD_FS_FOLDER"], "worker.log")
    logging.basicConfig(filename=log_file, level=getattr(logging, loglevel))
    from celery.app.trace import build_tracer

    from fixtures.celery_app import app
    from pytest_memguard.celery import lifecycle

    lifecycle._worker["pool"] = pool  # what worker_init sets in a worker of that pool
    task = app.tasks["fixtures.noop"]
    tracer = build_tracer(task.name, task, app=app, eager=False)
    request = {"hostname": "bench@localhost", "delivery_info": {"routing_key": "memguard"}, "is_eager": False}

    def call() -> None:
        task_id = uuid.uuid4().hex
        tracer(task_id, (), {}, {**request, "id": task_id})

    return call


def run_count(tasks: int, loglevel: str = "WARNING", pool: str = "solo") -> None:
    """Inside the child interpreter, under callgrind: 50 warm-up tasks, then ``tasks`` more (see
    :func:`instructions_per_task`)."""
    call = make_task_call(loglevel, pool)
    for _ in range(50 + tasks):
        call()


def instructions_per_task(env: dict, child_argv: list[str]) -> float:
    """Instructions per task of a child run under callgrind: the difference between 3000 and 1000 tasks, over
    2000 (start-up, imports and warm-up cancel). Deterministic where wall time on this VM is not: the same code
    counts the same within ~0.1 %. ``child_argv`` runs :func:`run_count` given ``--count N``."""
    counts = []
    for tasks in (1000, 3000):
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child_argv, "--count", str(tasks)]
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / 2000


def run_variant(tasks: int, batches: int, profile: bool, loglevel: str, pool: str = "solo") -> dict:
    """Inside the child interpreter: time ``batches`` batches of ``tasks`` tracer calls."""
    call = make_task_call(loglevel, pool)

    def batch() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(tasks):
            call()
        return (time.perf_counter() - start) / tasks, (time.process_time() - cpu) / tasks

    batch()  # warm up: imports, backend folders, first writes
    figures = [batch() for _ in range(batches)]
    out = {
        "per_task_us": [round(wall * 1e6, 1) for wall, _ in figures],
        "cpu_per_task_us": [round(cpu * 1e6, 1) for _, cpu in figures],
    }
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        batch()
        prof.disable()
        text = io.StringIO()
        # BENCH_SORT (a pstats key, default tottime) and BENCH_TOP (default 30) shape the listing.
        stats = pstats.Stats(prof, stream=text).sort_stats(os.environ.get("BENCH_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("BENCH_TOP", "30")))
        out["profile"] = text.getvalue()
    return out


def child_env(instrumented: bool, **extra: str) -> dict:
    return {
        **os.environ,
        "MEMGUARD_INSTRUMENT": "1" if instrumented else "0",
        "MEMGUARD_FS_FOLDER": tempfile.mkdtemp(prefix="memguard-tracer-"),
        "MEMGUARD_QUEUE": f"tracer-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions counts with callgrind: install valgrind (apt-get install valgrind)")


def spawn(instrumented: bool, tasks: int, batches: int, profile: bool, loglevel: str, pool: str) -> dict:
    env = child_env(instrumented)
    argv = [sys.executable, __file__, "--child", "--tasks", str(tasks), "--batches", str(batches)]
    argv += ["--loglevel", loglevel, "--pool", pool]
    if profile:
        argv.append("--profile")
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--loglevel", choices=("WARNING", "INFO"), default="WARNING")
    parser.add_argument(
        "--pool",
        choices=("solo", "prefork"),
        default="solo",
        help="the pool the tasks believe they run in: prefork also persists each running task's state (WORKER_LOST)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per task under callgrind (valgrind) instead of timing: exact where time is noisy",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child and args.count is not None:
        run_count(args.count, args.loglevel, args.pool)
        return 0
    if args.child:
        print(json.dumps(run_variant(args.tasks, args.batches, args.profile, args.loglevel, args.pool)))
        return 0
    if args.instructions:
        require_valgrind()
        child = [sys.executable, __file__, "--child", "--loglevel", args.loglevel, "--pool", args.pool]
        base = instructions_per_task(child_env(False), child)
        inst = instructions_per_task(child_env(True), child)
        print(f"log level {args.loglevel}, pool {args.pool}: instructions per task under callgrind")
        print(f"baseline {base:,.0f}, instrumented {inst:,.0f}: +{inst - base:,.0f} ({inst / base:.3f}x)")
        return 0
    base = spawn(False, args.tasks, args.batches, False, args.loglevel, args.pool)
    inst = spawn(True, args.tasks, args.batches, args.profile, args.loglevel, args.pool)
    print(f"log level {args.loglevel}, pool {args.pool}, {args.tasks} tasks x {args.batches} batches")
    for key, what in (("per_task_us", "wall"), ("cpu_per_task_us", "cpu")):
        b, i = min(base[key]), min(inst[key])
        print(f"{what}: baseline min {b:.1f} us/task, instrumented min {i:.1f} us/task")
        print(f"{what}: overhead +{i - b:.1f} us/task, ratio {i / b:.3f}")
    if args.profile:
        print(inst["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
