"""Per-task cost of instrumentation: N no-op tasks through a real solo worker, with and without ``instrument()``.

    python benchmarks/bench_celery_overhead.py --tasks 1000 --rounds 3 [--broker redis]

Both variants run in the same invocation, alternating (baseline, instrumented, baseline, …) so machine noise hits
both. Each round queues every task, then starts a fresh worker (log level INFO) and times it from its own log: first
``received`` to last ``succeeded``, so the caller's polling is not measured. Prints the median per variant and the
ratio instrumented / baseline (target: <= 1.05). The instrumented worker does everything production does: its
START/FINISH lines at INFO, the GC policy, and one record written to the result backend per task.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REDIS_BROKER, REDIS_BACKEND = "redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/4"


def one_round(instrumented: bool, n: int, broker: str, folder_root: str | None) -> float:
    from celery import Celery

    from fixtures.celery_app import config_from_env
    from pytest_memguard.celery import start_worker_process

    env = {
        "MEMGUARD_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
        "MEMGUARD_FS_FOLDER": tempfile.mkdtemp(prefix="memguard-bench-", dir=folder_root),
        "MEMGUARD_INSTRUMENT": "1" if instrumented else "0",
    }
    if broker == "redis":
        env.update(MEMGUARD_BROKER_URL=REDIS_BROKER, MEMGUARD_RESULT_BACKEND=REDIS_BACKEND)
    app = Celery(f"bench-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(config_from_env(env))
    results = [app.send_task("fixtures.noop") for _ in range(n)]  # the backlog is ready before the worker starts
    with start_worker_process("fixtures.celery_app", pool="solo", env=env, loglevel="INFO") as worker:
        for r in results:
            r.get(timeout=300, interval=0.05)  # a lazy caller: its polling must not compete with the worker
    log = worker.log_text()  # once stopped: the log is complete
    app.close()
    lines = log.count("Memory [fixtures.noop] FINISH")
    if lines != (n if instrumented else 0):
        raise SystemExit(f"expected {n if instrumented else 0} FINISH lines in the worker log, found {lines}")
    return worker_busy_seconds(log, n)


_STAMP = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[^\]]+\] Task fixtures\.noop\[[^\]]+\] (received|succeeded)"
)


def worker_busy_seconds(log: str, n: int) -> float:
    """From the first ``received`` to the last ``succeeded`` line of the worker's own log (ms resolution): the
    worker's time for the batch, untouched by how the caller polls."""
    stamps = {"received": [], "succeeded": []}
    for line in log.splitlines():
        match = _STAMP.match(line)
        if match:
            stamps[match.group(2)].append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    if len(stamps["succeeded"]) != n:
        raise SystemExit(f"expected {n} 'succeeded' lines in the worker log, found {len(stamps['succeeded'])}")
    return (max(stamps["succeeded"]) - min(stamps["received"])).total_seconds()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", choices=("embedded", "redis"), default="embedded")
    parser.add_argument(
        "--folder-root",
        default=None,
        help="where the embedded broker's folder goes (default: the temp dir); e.g. /dev/shm for tmpfs",
    )
    args = parser.parse_args(argv)
    os.environ.pop("MEMGUARD_INSTRUMENT", None)
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for instrumented in (False, True):
            elapsed = one_round(instrumented, args.tasks, args.broker, args.folder_root)
            times[instrumented].append(elapsed)
            label = "instrumented" if instrumented else "baseline    "
            print(f"round {round_ + 1}: {label} {elapsed:.3f}s ({elapsed / args.tasks * 1e3:.3f} ms/task)")
    base, inst = statistics.median(times[False]), statistics.median(times[True])
    ratio = inst / base
    where = f" in {args.folder_root or tempfile.gettempdir()}" if args.broker == "embedded" else ""
    print(f"{args.tasks} no-op tasks, solo worker, {args.broker} broker{where}")
    print(f"median baseline {base:.3f}s, instrumented {inst:.3f}s, ratio {ratio:.3f} (target <= 1.05)")
    print(f"per-task cost of instrumentation: {(inst - base) / args.tasks * 1e6:+.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
