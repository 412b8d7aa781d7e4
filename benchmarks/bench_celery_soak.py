"""Soak the embedded broker: N tasks through a real prefork worker, no message lost or failed.

    python benchmarks/bench_celery_soak.py --tasks 2000 --concurrency 2

Uses the ``memguard-fs://`` transport and the atomic ``file://`` backend in a fresh folder (kombu's own
``filesystem://`` lost the worker to a half-written message after a few hundred tasks on our machines). Sends
every task at once (the worst case for the broker: a deep backlog, concurrent readers), waits for every result
and every memory record, and exits non-zero on any loss, failure or duplicate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--prefetch-multiplier", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the whole soak, seconds")
    args = parser.parse_args(argv)

    folder = tempfile.mkdtemp(prefix="memguard-soak-")
    os.environ["MEMGUARD_FS_FOLDER"] = folder
    os.environ["MEMGUARD_QUEUE"] = f"soak-{uuid.uuid4().hex[:8]}"
    os.environ["MEMGUARD_LOG_LEVEL"] = "DEBUG"  # keep the worker log small: START/FINISH lines at DEBUG
    from celery.exceptions import TimeoutError as CeleryTimeout

    from fixtures import celery_tasks as tasks
    from fixtures.celery_app import app
    from pytest_memguard.celery import start_worker_process, task_memories

    app.conf.worker_prefetch_multiplier = args.prefetch_multiplier
    deadline = time.monotonic() + args.timeout
    env = {"MEMGUARD_PREFETCH": str(args.prefetch_multiplier)}
    with start_worker_process(
        "fixtures.celery_app", pool=args.pool, concurrency=args.concurrency, loglevel="WARNING", env=env
    ) as worker:
        t0 = time.perf_counter()
        results = [(tasks.steady.delay(0.5) if i % 4 == 0 else tasks.noop.delay()) for i in range(args.tasks)]
        sent = time.perf_counter() - t0
        failed, lost = [], []
        for r in results:
            try:
                r.get(timeout=max(deadline - time.monotonic(), 0.1), interval=0.01)
            except CeleryTimeout:
                lost.append(r.id)
            except Exception as exc:  # a task failure: recorded, reported
                failed.append((r.id, repr(exc)))
        elapsed = time.perf_counter() - t0
        records = task_memories(results, timeout=max(deadline - time.monotonic(), 1.0)) if not lost else []
        states = {}
        for rec in records:
            states[rec.state] = states.get(rec.state, 0) + 1
        log_errors = [line for line in worker.log_text().splitlines() if "Unrecoverable" in line or "ERROR" in line]
        worker_pid = worker.pid
    # Each record names the process that ran its task: a child's own pid, never the parent's (nor a stale one).
    pids = sorted({rec.pid for rec in records})
    pools = sorted({rec.pool for rec in records})
    print(f"tasks={args.tasks} pool={args.pool} concurrency={args.concurrency} prefetch={args.prefetch_multiplier}")
    print(f"sent in {sent:.2f}s, all done in {elapsed:.2f}s ({args.tasks / elapsed:.0f} tasks/s)")
    print(f"lost={len(lost)} failed={len(failed)} records={len(records)} states={states}")
    print(f"worker log error lines: {len(log_errors)}")
    print(f"record pids {pids} (worker's main process {worker_pid}), pools {pools}")
    for line in log_errors[:5]:
        print("  ", line)
    ok = not lost and not failed and len(records) == args.tasks and not log_errors
    ok = ok and worker_pid not in pids and None not in pids and pools == [args.pool]
    print("SOAK OK" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
