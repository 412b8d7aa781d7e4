"""Hunting one Celery task for leaks: eagerly in this process, or on a real worker process through its records.

Why a task is hunted on its own, apart from the test that ran it: a leak that lives in a worker process (a
module-level list in the task's module, a cache of the worker) never shows in the test process, whose memory is
all a test-level hunt measures. So each distinct execution (task + arguments, :mod:`.sends`) runs again, WARMUP
times unmeasured and RUNS times measured, where the test ran it:

- **eager** (:func:`hunt_eager`): :class:`~pytest_memguard.leaks.LeakHunter` around ``task.apply(args, kwargs)``
  in this process — retained traced heap and RSS after each run, and the lines that grew. The app is left
  unmeasured meanwhile (:func:`.lifecycle.suspended`): the records it would keep are the hunt's growth, not the
  task's.
- **worker** (:func:`hunt_on_worker`): the task is sent to the session's worker, one message at a time, each with
  the :data:`~.lifecycle.FULL_GC_HEADER` so the worker collects all generations after it and its record's
  ``finish_mb`` is the RSS the process *retains* — garbage awaiting the next collection would otherwise look like
  growth, or hide it. The series is the RSS after each execution **of one process**: a prefork worker spreads
  messages over its children and each child leaks only what it ran, so the records are grouped by ``pid``; every
  child gets WARMUP executions of its own before its executions count, messages are sent until one child has run
  RUNS measured executions (bounded), and that child's series is judged with the engine's RSS verdict (floor
  256 KB/run, steady growth only). Routing every message to one child is not something Celery's prefork pool
  offers, and restarting the worker with one child would cost seconds per test; grouping costs at most a few
  more messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..leaks import HuntResult, LeakHunter, Verdict, judge
from .collect import task_memory
from .lifecycle import FULL_GC_HEADER, suspended
from .records import SUCCESS, TaskMemory
from .sends import SentTask

MB = 1 << 20
#: Frames of Celery and kombu say nothing about where a task leaks.
CELERY_FRAMES: tuple[str, ...] = tuple(
    os.path.dirname(os.path.abspath(m.__file__))
    for m in (__import__("celery"), __import__("kombu"))
    if getattr(m, "__file__", None)
)
ProgressFn = Callable[[str, int, int], None]


def resolve_task(app: Any, name: str) -> Any:
    """The registered task object, or a signature by name (worker mode can send what this process never imported)."""
    if name in app.tasks:
        return app.tasks[name]
    return app.signature(name)


def hunt_eager(app: Any, sent: SentTask, hunter: LeakHunter) -> HuntResult:
    """Hunt ``sent`` with ``hunter`` around ``task.apply(args, kwargs)``; a failing execution raises."""
    task = app.tasks[sent.name]

    def run_once() -> None:
        task.apply(args=sent.args, kwargs=sent.kwargs, throw=True)

    with suspended(app):
        return hunter.hunt(run_once)


@dataclass
class WorkerHunt:
    """What :func:`hunt_on_worker` found: the verdict of the process that ran most, and how it got there."""

    warmup: int
    runs: int
    verdict: Verdict | None = None
    pid: int | None = None
    samples: list[int] = field(default_factory=list)  # RSS bytes: before the first measured run, then after each
    sent: int = 0
    measured_by_pid: dict[int, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def leaking(self) -> bool:
        return self.verdict is not None and self.verdict.leaking

    def check_limit(self, kb: float) -> Verdict:
        """The RSS verdict with ``kb`` as the floor (``max_leak_kb``)."""
        return judge(self.samples, "rss", floor_kb=kb)

    def as_dict(self) -> dict:
        v = self.verdict
        return {
            "leaking": self.leaking,
            "warmup": self.warmup,
            "runs": self.runs,
            "pid": self.pid,
            "sent": self.sent,
            "measured_by_pid": {str(k): n for k, n in self.measured_by_pid.items()},
            "rss": None
            if v is None
            else {"leaking": v.leaking, "kb_per_run": round(v.kb_per_run, 3), "runs": v.runs, "reason": v.reason},
            "rss_samples": list(self.samples),
            "error": self.error,
        }


def _run_on_worker(app: Any, sent: SentTask, timeout: float) -> TaskMemory:
    """Send one execution, wait for its result and record (both bounded); a failed execution raises."""
    task = resolve_task(app, sent.name)
    result = task.apply_async(args=sent.args, kwargs=sent.kwargs, headers={FULL_GC_HEADER: True})
    result.get(timeout=timeout, interval=0.02, propagate=False, disable_sync_subtasks=False)
    record = task_memory(result, timeout=timeout, app=app)
    if record.state != SUCCESS:
        raise RuntimeError(f"execution {record.task_id} ended {record.state}: {record.exception or 'no exception'}")
    if record.pid is None or record.finish_mb is None or record.start_mb is None:
        raise RuntimeError(f"execution {record.task_id} has no RSS figures (pid, start_mb, finish_mb)")
    return record


def judge_process(records: Sequence[TaskMemory], warmup: int, runs: int) -> tuple[int | None, list[int], dict]:
    """Pick the process whose measured executions are most numerous; return its pid, RSS series and the counts.

    An execution counts (is measured) once its process has run ``warmup`` executions before it; the series is the
    first measured execution's start RSS, then each measured execution's finish RSS, at most ``runs`` of them."""
    seen: dict[int, int] = {}
    measured: dict[int, list[TaskMemory]] = {}
    for record in records:
        pid = int(record.pid or 0)
        seen[pid] = seen.get(pid, 0) + 1
        if seen[pid] > warmup:
            measured.setdefault(pid, []).append(record)
    counts = {pid: len(rs) for pid, rs in measured.items()}
    if not measured:
        return None, [], counts
    pid = max(measured, key=lambda p: len(measured[p]))
    chosen = measured[pid][:runs]
    samples = [int(chosen[0].start_mb * MB)] + [int(r.finish_mb * MB) for r in chosen]
    return pid, samples, counts


def hunt_on_worker(
    app: Any,
    sent: SentTask,
    warmup: int,
    runs: int,
    *,
    timeout: float,
    max_sends: int,
    progress: ProgressFn | None = None,
) -> WorkerHunt:
    """Send ``sent`` to the worker until one process ran ``warmup`` + ``runs`` of it (or ``max_sends`` went out), and
    judge that process's retained RSS per execution. Never raises for a task or worker problem: ``error`` says."""
    outcome = WorkerHunt(warmup, runs)
    records: list[TaskMemory] = []
    per_pid: dict[int, int] = {}
    try:
        while outcome.sent < max_sends:
            record = _run_on_worker(app, sent, timeout)
            outcome.sent += 1
            records.append(record)
            pid = int(record.pid or 0)
            per_pid[pid] = per_pid.get(pid, 0) + 1
            best = max(per_pid.values())
            if progress is not None:
                phase = "warmup" if best <= warmup else "run"
                progress(phase, best if best <= warmup else best - warmup, warmup if best <= warmup else runs)
            if best >= warmup + runs:
                break
    except Exception as exc:
        outcome.error = f"execution {outcome.sent + 1} on the worker: {type(exc).__name__}: {exc}"
    outcome.pid, outcome.samples, outcome.measured_by_pid = judge_process(records, warmup, runs)
    if outcome.samples:
        outcome.verdict = judge(outcome.samples, "rss")
    elif outcome.error is None:
        outcome.error = f"no process ran it more than {warmup} times in {outcome.sent} executions"
    return outcome
