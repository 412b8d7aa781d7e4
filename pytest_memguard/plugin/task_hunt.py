"""``--hunt-leaks`` for the Celery tasks a test ran: each distinct execution hunted on its own, in the test's mode.

Why on its own: a test-level hunt measures the test process; a task run by a worker leaks in the worker, where that
hunt never looks (see :mod:`pytest_memguard.celery.hunt` for how each mode measures). What is hunted: every
distinct (task name, arguments) the test started itself, as :class:`~pytest_memguard.celery.sends.SendLog` saw it
while the test's *first* run (the one that passed) ran. Executions whose arguments are not known — children a task
sent inside the worker, a message body that could not be read — are listed as not hunted, never guessed.

``@pytest.mark.max_leak_kb(kb, task="pattern")`` limits the hunts of the tasks whose name is ``pattern`` or matches
it (fnmatch), as the budget markers' ``task=`` does; the closest matching marker wins. A ``max_leak_kb`` without
``task=`` limits the test's own hunt only. Either marker makes the test (and so its tasks) hunted.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import pytest

MARKER = "max_leak_kb"


def task_limits(item: pytest.Item) -> list[tuple[str, float]]:
    """``[(pattern, kb), ...]`` of the ``max_leak_kb(kb, task=...)`` markers, closest first; ``ValueError`` if bad."""
    found = []
    for mark in item.iter_markers(MARKER):
        if "task" not in mark.kwargs:
            continue
        pattern = mark.kwargs["task"]
        unknown = set(mark.kwargs) - {"task", "kb", "kb_per_run"}
        values = list(mark.args) + [mark.kwargs[k] for k in ("kb_per_run", "kb") if k in mark.kwargs]
        kb = _number(values[0]) if len(values) == 1 and not unknown else None
        if kb is None or not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"bad {MARKER} marker on {item.nodeid}: {mark.args!r} {mark.kwargs}; "
                f'write @pytest.mark.{MARKER}(10, task="proj.tasks.upload") for 10 KB per run of that task'
            )
        found.append((pattern, kb))
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        kb = float(value)
    except (TypeError, ValueError):
        return None
    return kb if kb >= 0 and kb == kb else None


def limit_for(name: str, limits: list[tuple[str, float]]) -> float | None:
    for pattern, kb in limits:
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return kb
    return None


@dataclass
class TaskHuntOutcome:
    """One task's hunt: an eager ``HuntResult`` or a ``WorkerHunt``, or why it could not finish."""

    name: str
    label: str
    mode: str
    result: Any = None  # HuntResult (eager)
    worker: Any = None  # WorkerHunt (worker)
    error: str | None = None
    limit_kb: float | None = None
    limit_line: str | None = None

    @property
    def verdict(self) -> Any:
        if self.result is not None:
            return self.result.verdict
        return self.worker.verdict if self.worker is not None else None

    @property
    def leaking(self) -> bool | None:
        verdict = self.verdict
        if self.result is not None:
            return self.result.leaking
        return None if verdict is None else verdict.leaking

    @property
    def flagged(self) -> bool:
        return bool(self.limit_line) or bool(self.leaking)

    @property
    def headline(self) -> str:
        """``LEAK ~1028.0 KB/run over 10 runs (rss, worker) task fixtures.process_leak(1024) in worker pid 7`` etc."""
        v = self.verdict
        if v is None:
            return f"task {self.label}: hunt not finished: {self.error}"
        where = f" in worker pid {self.worker.pid}" if self.worker is not None else ""
        if not v.leaking:
            return (
                f"no leak: ~{v.kb_per_run:.1f} KB/run over {v.runs} runs ({v.metric}, {self.mode}; {v.reason}) "
                f"task {self.label}{where}"
            )
        text = f"LEAK ~{v.kb_per_run:.1f} KB/run over {v.runs} runs ({v.metric}, {self.mode}) task {self.label}{where}"
        rendered = v.render(self.result.sites if self.result is not None else ())
        _, sep, sites = rendered.partition(", top sites: ")
        return text + (sep + sites if sep else "")

    def text(self, verbose: bool) -> str:
        lines = [self.limit_line] if self.limit_line else []
        lines.append(self.headline)
        if self.result is not None and (self.result.leaking or verbose):
            lines += self.result.render(verbose=verbose).splitlines()[1:]
        if self.worker is not None and (self.worker.leaking or verbose):
            counts = ", ".join(f"pid {pid}: {n}" for pid, n in self.worker.measured_by_pid.items())
            lines.append(
                f"  retained RSS after a full collection, per execution of one worker process; {self.worker.sent} "
                f"sent, measured per process: {counts}"
            )
        if self.error and self.verdict is not None:
            lines.append(f"  hunt not finished: {self.error}")
        if self.limit_kb is not None and not self.limit_line and self.verdict is not None:
            lines.append(f"  within max_leak_kb {self.limit_kb:g} KB/run")
        return "\n".join(lines)

    def check_limit(self) -> None:
        if self.limit_kb is None:
            return
        if self.verdict is None:
            self.limit_line = f"max_leak_kb {self.limit_kb:g} (task {self.name}): could not hunt ({self.error})"
            return
        source = self.result if self.result is not None else self.worker
        v = source.check_limit(self.limit_kb)
        if v.leaking:
            self.limit_line = (
                f"leak limit exceeded: ~{v.kb_per_run:.1f} KB/run over {v.runs} runs ({v.metric}, {self.mode}) "
                f"task {self.label} > max_leak_kb {self.limit_kb:g}"
            )

    def as_dict(self) -> dict:
        return {
            "task": self.name,
            "call": self.label,
            "mode": self.mode,
            "verdict": self.headline,
            "leaking": self.leaking,
            "flagged": self.flagged,
            "limit_kb": self.limit_kb,
            "limit_exceeded": self.limit_line,
            "error": self.error,
            "hunt": self.result.as_dict() if self.result is not None else None,
            "worker": self.worker.as_dict() if self.worker is not None else None,
        }


def sends_of(memory: Any) -> tuple[list, list[str]]:
    """The distinct executions to hunt from the test's first run, and a note for each one that cannot be."""
    log = getattr(memory, "sends", None)
    if log is None:
        return [], []
    distinct = log.distinct()
    known = [s for s in distinct if s.known]
    unreadable = [s for s in distinct if not s.known]
    notes = [f"task {s.name} [{s.task_id}]: not hunted: its message body could not be read" for s in unreadable]
    if log.dropped:
        notes.append(f"{log.dropped} more task execution(s) not hunted (only the first {log.limit} are kept)")
    started = {s.task_id for s in log.sent}
    records = (memory.final or ([], []))[0]
    unknown = {r.task_name for r in records if r.task_id not in started}
    for name in sorted(unknown):
        notes.append(f"task {name}: not hunted: its arguments are unknown (started by another task, not the test)")
    return known, notes


def hunt_tasks(memory: Any, sends: list, warmup: int, runs: int, *, limits, exclude, progress) -> list:
    """Hunt each of ``sends`` in ``memory``'s mode (the test's), after stopping its collector and send log: the
    hunt's own executions are neither the test's records nor more executions to hunt."""
    from ..celery.hunt import CELERY_FRAMES, hunt_eager, hunt_on_worker
    from ..leaks import LeakHunter

    memory.collector.close()
    if getattr(memory, "sends", None) is not None:
        memory.sends.close()
    outcomes = []
    for sent in sends:
        outcome = TaskHuntOutcome(sent.name, sent.label(), memory.mode, limit_kb=limit_for(sent.name, limits))
        try:
            if memory.mode == "eager":
                hunter = LeakHunter(warmup, runs, exclude=tuple(exclude) + CELERY_FRAMES, progress=progress)
                outcome.result = hunt_eager(memory.app, sent, hunter)
            else:
                session = memory.session
                session.ensure_alive()
                outcome.worker = hunt_on_worker(
                    memory.app,
                    sent,
                    warmup,
                    runs,
                    timeout=memory.timeout,
                    max_sends=(warmup + runs) * (max(int(session.concurrency or 1), 1) + 1),
                    progress=progress,
                )
                outcome.error = outcome.worker.error
        except Exception as exc:
            outcome.error = f"a run raised {type(exc).__name__}: {exc}"
        outcome.check_limit()
        outcomes.append(outcome)
    return outcomes
