"""The floor under #3's 1.05 target: what the readings an exact per-task peak needs cost on Celery's task path,
with no signal, no memguard code and next to no Python around them.

    python benchmarks/bench_celery_floor.py [--tasks 500] [--rounds 30] [--worker-tasks 1000] [--worker-rounds 3]
        [--folder-root /dev/shm] [--skip-worker]

An exact peak per task (the kernel's high-water mark, reset per task: #2) with its start and finish RSS, delivered
as a record per task (#3), takes at least, per task: writing ``5`` to ``/proc/self/clear_refs`` (``reset``),
``getrusage`` right after it and again at the end (``rusage``: the start RSS is the fresh mark, the end one the
peak), reading ``/proc/self/statm`` (``statm``: the finish RSS) and appending the record to a journal (``append``).
:class:`FloorHooks` does that and nothing more, from the app loader's ``on_task_init``/``on_process_cleanup``,
which Celery's tracer calls on every task without a signal dispatch (the dispatch costs more: see
``bench_celery_breakdown.py``).

1. In-process: Celery's own tracer for ``fixtures.noop`` (built as ``bench_celery_tracer.py`` builds it) once per
   variant (no hooks; hooks with no reading; one primitive each; all of them), their batches interleaved round-robin
   in one interpreter so the VM's drift hits every variant alike. Prints the min and median per task and their
   difference to the unhooked tracer.
2. Through a real solo worker on the embedded broker, as ``bench_celery_overhead.py`` runs it: the baseline; the
   loader hooks with no reading (``hooks``); the floor (all four readings and the append); ``lean``, three readings
   (the mark reset when a task ends, see :class:`FloorHooks`); ``lean+signals``, the same through
   ``task_prerun``/``task_postrun``; and memguard's ``instrument()``; in paired rounds. Prints each one's ratio to
   the baseline, of their least disturbed rounds and as the median of paired rounds: what instrumentation with an
   exact per-task peak and a record per task cannot go under, with the readings #2 takes (``floor``), with one
   fewer (``lean``), and through the signals #3 specifies (``lean+signals``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIMITIVES = ("reset", "rusage", "statm", "append")
# The floor worker's settings, JSON: FloorHooks' arguments (``celery -A benchmarks.bench_celery_floor``).
FLOOR_ENV = "MEMGUARD_FLOOR"


class FloorHooks:
    """Per-task readings around every task, and nothing else.

    ``primitives`` picks which of :data:`PRIMITIVES` run (the in-process part times each alone); the record line
    is formatted in every variant, so the ``append`` variant adds only the system call. ``lean`` saves a reading
    per task at the price of the semantics: the mark is reset when a task ends (after its readings), so the next
    task's start RSS is that finish and its peak also covers the gap between tasks — three readings, not four.
    ``via``: ``"loader"`` (the app loader's ``on_task_init``/``on_process_cleanup``, which Celery's tracer calls
    without a dispatch) or ``"signals"`` (``task_prerun``/``task_postrun``, as #3 specifies)."""

    def __init__(self, journal_path: str, primitives=PRIMITIVES, lean: bool = False, via: str = "loader") -> None:
        unknown = set(primitives) - set(PRIMITIVES)
        if unknown:
            raise ValueError(f"unknown primitive(s) {sorted(unknown)}; choose from {', '.join(PRIMITIVES)}")
        if via not in ("loader", "signals"):
            raise ValueError(f"via must be 'loader' or 'signals', got {via!r}")
        if lean and set(primitives) != set(PRIMITIVES):
            raise ValueError("lean reorders the readings: it takes all the primitives")
        self.primitives = frozenset(primitives)
        self.journal_path, self.lean, self.via = journal_path, lean, via

    def install(self, app) -> None:
        """Chain this variant's hooks in front of ``app.loader``'s, or connect them to the signals (tracers built
        afterwards call them)."""
        reset, rusage, statm, append = (name in self.primitives for name in PRIMITIVES)
        lean = self.lean
        statm_fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        clear_refs_fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        write, pread, getrusage, self_ = os.write, os.pread, resource.getrusage, resource.RUSAGE_SELF
        time_ns, perf_counter_ns = time.time_ns, time.perf_counter_ns
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        running: list = []
        if lean:
            write(clear_refs_fd, b"5")
        last_finish_kib = [getrusage(self_).ru_maxrss]

        def task_started(task_id, task):
            if lean:
                start_kib = last_finish_kib[0]
            else:
                if reset:
                    write(clear_refs_fd, b"5")
                start_kib = getrusage(self_).ru_maxrss if rusage else 0
            running.append((task_id, task.name, start_kib, time_ns() // 1000, perf_counter_ns()))

        def task_ended():
            task_id, name, start_kib, started_us, t0 = running.pop()
            finish_kib = int(pread(statm_fd, 128, 0).split()[1]) * page_kib if statm else 0
            peak_kib = getrusage(self_).ru_maxrss if rusage else 0
            if lean:
                write(clear_refs_fd, b"5")
                last_finish_kib[0] = finish_kib
            if peak_kib < finish_kib:  # read a moment apart from statm (memguard's monitor applies the same rule)
                peak_kib = finish_kib
            line = (
                f'{{"task_id":"{task_id}","task_name":"{name}","state":"SUCCESS","start_kib":{start_kib},'
                f'"finish_kib":{finish_kib},"peak_kib":{peak_kib},"started_us":{started_us},'
                f'"duration_ns":{perf_counter_ns() - t0}}}\n'
            )
            if append:
                write(journal_fd, line.encode())

        if self.via == "signals":
            from celery import signals

            def on_prerun(sender=None, task_id=None, task=None, **_):
                task_started(task_id, task)

            def on_postrun(**_):
                task_ended()

            signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid="memguard.floor.prerun")
            signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid="memguard.floor.postrun")
            return
        loader = app.loader
        task_init, process_cleanup = loader.on_task_init, loader.on_process_cleanup

        def on_task_init(task_id, task):
            task_init(task_id, task)
            task_started(task_id, task)

        def on_process_cleanup():
            task_ended()
            process_cleanup()

        loader.on_task_init, loader.on_process_cleanup = on_task_init, on_process_cleanup


def check_floor_journal(journal: Path, tasks: int) -> None:
    """The floor's hooks did their readings: a record per task, each with its start, finish and peak read."""
    records = [json.loads(line) for line in journal.read_bytes().splitlines()]
    if len(records) != tasks:
        raise SystemExit(f"the floor's hooks appended {len(records)} records to {journal}, expected {tasks}")
    for record in records:
        if min(record["start_kib"], record["finish_kib"], record["peak_kib"]) <= 0:
            raise SystemExit(f"a floor record without sound readings: {record}")


if os.environ.get(FLOOR_ENV):  # imported by a floor variant's worker: the app, with that variant's hooks
    from fixtures.celery_app import app

    FloorHooks(**json.loads(os.environ[FLOOR_ENV])).install(app)


# -- 1. in-process -------------------------------------------------------------------------------------------------
IN_PROCESS_VARIANTS: dict[str, tuple[str, ...] | None] = {
    "tracer": None,  # Celery's tracer with the loader's own hooks
    "hooks": (),  # the floor's hooks with no reading (their Python, the line formatted)
    **{name: (name,) for name in PRIMITIVES},
    "floor": PRIMITIVES,
}


def in_process(tasks: int, rounds: int, folder_root: str | None) -> dict[str, list[float]]:
    """Per-task microseconds of each variant's batches (see the module docstring, part 1)."""
    from bench_celery_tracer import make_task_call

    folder = tempfile.mkdtemp(prefix="memguard-floor-", dir=folder_root)
    os.environ.update(MEMGUARD_FS_FOLDER=folder, MEMGUARD_INSTRUMENT="0", MEMGUARD_QUEUE="floor")
    from fixtures.celery_app import app

    loader = app.loader
    own_hooks = loader.on_task_init, loader.on_process_cleanup
    calls = {}
    for name, primitives in IN_PROCESS_VARIANTS.items():
        loader.on_task_init, loader.on_process_cleanup = own_hooks
        if primitives is not None:
            FloorHooks(os.path.join(folder, f"journal-{name}"), primitives).install(app)
        calls[name] = make_task_call("WARNING")  # its tracer calls the loader hooks installed now
    loader.on_task_init, loader.on_process_cleanup = own_hooks

    def batch(call, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - start) / n * 1e6

    for call in calls.values():
        batch(call, 200)  # warm up: imports, backend folders, first writes
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(batch(call, tasks))
    check_floor_journal(Path(folder, "journal-floor"), 200 + rounds * tasks)
    return times


def print_in_process(times: dict[str, list[float]], tasks: int) -> None:
    base_min, base_median = min(times["tracer"]), statistics.median(times["tracer"])
    print(f"1. in-process: Celery's tracer, fixtures.noop, {len(times['tracer'])} interleaved batches of {tasks}")
    print(f"   {'variant':8s} {'min us':>8s} {'+':>6s} {'median us':>10s} {'+':>6s}")
    for name, values in times.items():
        low, mid = min(values), statistics.median(values)
        print(f"   {name:8s} {low:8.1f} {low - base_min:+6.1f} {mid:10.1f} {mid - base_median:+6.1f}")


# -- 2. a real worker ----------------------------------------------------------------------------------------------
WORKER_VARIANTS: dict[str, dict | None] = {
    "baseline": None,
    "hooks": {"primitives": []},  # the loader hooks, no reading, no append
    "floor": {},  # the four readings and the append, from the loader hooks
    "lean": {"lean": True},  # three readings (see FloorHooks) and the append, from the loader hooks
    "lean+signals": {"lean": True, "via": "signals"},  # the same through task_prerun/task_postrun
    "memguard": None,  # fixtures.celery_app with instrument()
}


def through_worker(tasks: int, rounds: int, folder_root: str | None) -> dict[str, list[float]]:
    """Seconds per round of each variant through a real solo worker (see the module docstring, part 2)."""
    from bench_celery_overhead import one_round

    times: dict[str, list[float]] = {name: [] for name in WORKER_VARIANTS}
    for round_ in range(rounds):
        for name, hooks in WORKER_VARIANTS.items():
            extra_env, app_path, journal = {}, "fixtures.celery_app", None
            if hooks is not None:
                journal = os.path.join(tempfile.mkdtemp(prefix="memguard-floor-", dir=folder_root), "journal")
                extra_env = {FLOOR_ENV: json.dumps({"journal_path": journal, **hooks})}
                app_path = "benchmarks.bench_celery_floor"
            elapsed = one_round(
                name == "memguard", tasks, "embedded", folder_root, "WARNING", app_path=app_path, extra_env=extra_env
            )
            if journal is not None and hooks.get("primitives") is None:
                check_floor_journal(Path(journal), tasks)
            times[name].append(elapsed)
            print(f"   round {round_ + 1}: {name:12s} {elapsed / tasks * 1e6:7.1f} us/task")
    return times


def print_worker(times: dict[str, list[float]], tasks: int, folder_root: str | None) -> None:
    """Two estimates of each ratio: the least disturbed round of each variant (min over min: the VM's bursts only
    ever add time) and the median of each round over the baseline round before it (drift between rounds cancels)."""
    where = folder_root or tempfile.gettempdir()
    base = times["baseline"]
    print(f"2. {tasks} no-op tasks, real solo worker, embedded broker in {where}, WARNING, {len(base)} rounds")
    low_us, median_us = min(base) / tasks * 1e6, statistics.median(base) / tasks * 1e6
    print(f"   baseline     min {low_us:6.1f} us/task, median {median_us:6.1f}")
    print(f"   {'variant':12s} {'ratio of mins':>13s} {'':>8s}  {'paired median':>13s} {'':>8s}  (target 1.05)")
    for name in list(WORKER_VARIANTS)[1:]:
        low = min(times[name]) / min(base)
        low_extra = (min(times[name]) - min(base)) / tasks * 1e6
        paired = statistics.median(v / b for b, v in zip(base, times[name], strict=True))
        paired_extra = statistics.median((v - b) / tasks * 1e6 for b, v in zip(base, times[name], strict=True))
        print(f"   {name:12s} {low:13.3f} {low_extra:+6.1f}us  {paired:13.3f} {paired_extra:+6.1f}us")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500, help="tasks per in-process batch")
    parser.add_argument("--rounds", type=int, default=30, help="in-process batches per variant")
    parser.add_argument("--worker-tasks", type=int, default=1000)
    parser.add_argument("--worker-rounds", type=int, default=3)
    parser.add_argument("--folder-root", default=None, help="where the broker/journal folders go, e.g. /dev/shm")
    parser.add_argument("--skip-worker", action="store_true", help="only the in-process part")
    args = parser.parse_args(argv)
    if not os.path.exists("/proc/self/clear_refs"):
        raise SystemExit("the floor is Linux's: /proc/self/clear_refs is missing here")
    if not args.skip_worker:  # first: part 1 sets this process's environment for its in-process app
        worker_times = through_worker(args.worker_tasks, args.worker_rounds, args.folder_root)
    print_in_process(in_process(args.tasks, args.rounds, args.folder_root), args.tasks)
    if not args.skip_worker:
        print_worker(worker_times, args.worker_tasks, args.folder_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
