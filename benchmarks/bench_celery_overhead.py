"""Per-task cost of instrumentation: N no-op tasks through a real solo worker, with and without ``instrument()``.

    python benchmarks/bench_celery_overhead.py --tasks 1000 --rounds 3 [--broker redis|rabbitmq]

Both variants run in the same invocation, alternating (baseline, instrumented, baseline, …) so machine noise hits
both. Each round queues every task, then starts a fresh worker and times it by the worker's own clock: the span of
the results' ``date_done`` stamps (first to last task stored), so neither worker start-up nor the caller's polling
is measured. Prints the median per variant and the ratio instrumented / baseline (target: <= 1.05), at each log
level asked for: ``WARNING`` is what ``celery worker`` runs at without ``-l``; at ``INFO`` Celery logs a line per
task and memguard two (START and FINISH). The instrumented worker does everything production does: the log lines
its level lets through, the GC policy, and one record per task delivered to the result backend.
``bench_celery_floor.py`` measures, the same way, what any instrumentation keeping an exact per-task peak costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REDIS_BROKER, REDIS_BACKEND = "redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/4"
RABBITMQ_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def one_round(
    instrumented: bool,
    n: int,
    broker: str,
    folder_root: str | None,
    loglevel: str,
    app_path: str = "fixtures.celery_app",
    extra_env: dict | None = None,
) -> float:
    """Seconds the worker took over ``n`` queued no-op tasks (``app_path`` and ``extra_env``: another worker app,
    as ``bench_celery_floor.py`` runs)."""
    from celery import Celery

    from fixtures.celery_app import config_from_env
    from pytest_memguard.celery import start_worker_process, task_memories

    env = {
        "MEMGUARD_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
        "MEMGUARD_FS_FOLDER": tempfile.mkdtemp(prefix="memguard-bench-", dir=folder_root),
        "MEMGUARD_INSTRUMENT": "1" if instrumented else "0",
        **(extra_env or {}),
    }
    if broker == "redis":
        env.update(MEMGUARD_BROKER_URL=REDIS_BROKER, MEMGUARD_RESULT_BACKEND=REDIS_BACKEND)
    elif broker == "rabbitmq":  # RabbitMQ broker, Redis results (RabbitMQ keeps no results)
        env.update(MEMGUARD_BROKER_URL=RABBITMQ_BROKER, MEMGUARD_RESULT_BACKEND=REDIS_BACKEND)
    app = Celery(f"bench-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(config_from_env(env))
    results = [app.send_task("fixtures.noop") for _ in range(n)]  # the backlog is ready before the worker starts
    with start_worker_process(app_path, pool="solo", env=env, loglevel=loglevel) as worker:
        for r in results:
            r.get(timeout=300, interval=0.05)  # a lazy caller: its polling must not compete with the worker
        if instrumented:  # every task's record arrived (they are written off the task's path, in batches)
            records = task_memories(results, timeout=60, app=app, children=False)
            if len(records) != n:
                raise SystemExit(f"expected {n} memory records, got {len(records)}")
    log = worker.log_text()
    app.close()
    lines = log.count("Memory [fixtures.noop] FINISH")
    expected = n if instrumented and loglevel == "INFO" else 0
    if lines != expected:
        raise SystemExit(f"expected {expected} FINISH lines in the worker log, found {lines}")
    return busy_seconds(results)


def busy_seconds(results) -> float:
    """From the first to the last result stored, by the worker's own ``date_done`` stamps (µs resolution)."""
    stamps = [r.date_done for r in results]
    if any(stamp is None for stamp in stamps):
        raise SystemExit("a result has no date_done: the backend does not record completion times")
    return (max(stamps) - min(stamps)).total_seconds()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", choices=("embedded", "redis", "rabbitmq"), default="embedded")
    parser.add_argument(
        "--folder-root",
        default=None,
        help="where the embedded broker's folder goes (default: the temp dir); e.g. /dev/shm for tmpfs",
    )
    parser.add_argument(
        "--loglevel",
        action="append",
        choices=("WARNING", "INFO"),
        help="worker log level(s) to measure at (default: both, WARNING first)",
    )
    args = parser.parse_args(argv)
    os.environ.pop("MEMGUARD_INSTRUMENT", None)
    where = f" in {args.folder_root or tempfile.gettempdir()}" if args.broker == "embedded" else ""
    for loglevel in args.loglevel or ["WARNING", "INFO"]:
        times: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for instrumented in (False, True):
                elapsed = one_round(instrumented, args.tasks, args.broker, args.folder_root, loglevel)
                times[instrumented].append(elapsed)
                label = "instrumented" if instrumented else "baseline    "
                per_task_ms = elapsed / args.tasks * 1e3
                print(f"[{loglevel}] round {round_ + 1}: {label} {elapsed:.3f}s ({per_task_ms:.3f} ms/task)")
        base, inst = statistics.median(times[False]), statistics.median(times[True])
        # Each instrumented round against the baseline round just before it: the machine's drift between rounds
        # (this VM's speed moves by tens of percent within minutes) cancels in the pair.
        paired = statistics.median(i / b for b, i in zip(times[False], times[True], strict=True))
        print(f"[{loglevel}] {args.tasks} no-op tasks, solo worker, {args.broker} broker{where}")
        print(
            f"[{loglevel}] median baseline {base:.3f}s, instrumented {inst:.3f}s, ratio {inst / base:.3f} (target 1.05)"
        )
        print(f"[{loglevel}] median ratio of each round to the baseline before it: {paired:.3f}")
        # The least disturbed round of each (this VM's bursts only ever add time).
        print(f"[{loglevel}] ratio of the fastest rounds: {min(times[True]) / min(times[False]):.3f}")
        print(f"[{loglevel}] per-task cost of instrumentation: {(inst - base) / args.tasks * 1e6:+.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
