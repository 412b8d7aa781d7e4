"""What a test sees of its Celery tasks: :class:`CeleryMemory` (every record, by name and id) and ``celery_run``.

Why the records come from a collector opened around the test (:func:`pytest_memguard.celery.collect_task_memories`)
and not from the helpers alone: a test may call ``task.delay()`` itself, send a group, or have a task send children
and retry; every one of those executions must be judged against the test's ``task=`` budgets. The collector sees
eager executions as they happen and worker executions by the ids of the messages the test sent.

Nothing here imports Celery at import time (it is an optional extra); the records are ``TaskMemory`` objects.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

WORKER_LOST = "WORKER_LOST"


@dataclass
class TaskRun:
    """One task run by ``celery_run``: its ``result`` (AsyncResult/EagerResult), return ``value`` and ``memory``."""

    result: Any
    value: Any
    memory: Any  # TaskMemory

    @property
    def task_id(self) -> str:
        return self.result.id

    @property
    def state(self) -> str:
        return self.memory.state


class CeleryMemory:
    """The ``TaskMemory`` records of the running test's Celery tasks (the ``celery_memory`` fixture).

    ``records`` waits (bounded by the session's timeout) for the record of every task sent so far, then returns them
    all in the order they were produced or sent: each retried attempt, child tasks, eager runs. ``by_name`` takes a
    task name or fnmatch pattern; ``get`` a task id (its final record)."""

    def __init__(self, app: Any, mode: str, collector: Any, timeout: float, session: Any = None) -> None:
        self.app = app
        self.mode = mode
        self.collector = collector
        self.timeout = timeout
        self.session = session  # WorkerSession in worker mode
        self.log_offset = 0
        self.final: tuple[list, list[str]] | None = None
        self.sends: Any = None  # a SendLog while the test is hunted for leaks (--hunt-leaks)
        worker = self.worker
        if worker is not None:
            try:
                self.log_offset = worker.log_path.stat().st_size
            except OSError:
                self.log_offset = 0

    @property
    def worker(self):
        """The worker process (``WorkerProcess``: ``pid``, ``log_text()``, ``child_pids()``) in worker mode."""
        return self.session.worker if self.session is not None else None

    def _alive(self) -> bool:
        return self.session is None or self.session.alive()

    def gather(self, timeout: float | None = None) -> tuple[list, list[str]]:
        """``(records, ids of sent tasks without a record)``, waiting up to ``timeout`` (never raising)."""
        from ..celery.testing import gather_records

        return gather_records(self.collector, self.timeout if timeout is None else timeout, alive=self._alive)

    @property
    def records(self) -> list:
        records, missing = self.gather()
        if missing:
            from ..celery import TaskMemoryTimeout

            raise TaskMemoryTimeout(
                f"no memory record for task(s) {', '.join(missing)} within {self.timeout:g}s ("
                + ("the worker died; " if not self._alive() else "")
                + "wait for their results first; raise --memguard-celery-timeout for slow tasks)"
            )
        return records

    def by_name(self, pattern: str) -> list:
        """Records whose task name is ``pattern`` or matches it (fnmatch), e.g. ``by_name("fixtures.spiky")``."""
        return [r for r in self.records if r.task_name == pattern or fnmatch.fnmatchcase(r.task_name, pattern)]

    def get(self, task_id: Any) -> Any:
        """The final record of one task (an id or a result), waiting for it (bounded)."""
        from ..celery import task_memory

        result = self.app.AsyncResult(task_id) if isinstance(task_id, str) else task_id
        return task_memory(result, timeout=self.timeout, app=self.app)

    def finish(self) -> tuple[list, list[str]]:
        """At the end of the call phase: every record, and the sent tasks that have none (gathered once)."""
        if self.final is None:
            self.final = self.gather()
        return self.final

    def log_since_start(self, max_lines: int = 80) -> str:
        """The worker's log written since this test started (its last ``max_lines`` lines)."""
        worker = self.worker
        if worker is None:
            return ""
        try:
            with open(worker.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(cannot read the worker log {worker.log_path}: {exc})"
        lines = text.splitlines()
        head = f"(last {max_lines} of {len(lines)} lines)\n" if len(lines) > max_lines else ""
        return head + "\n".join(lines[-max_lines:])


class CeleryRunner:
    """The ``celery_run`` fixture: run a task in the test's mode and get its value and memory record back.

    ``celery_run(task, *args, **kwargs)`` sends it (``task`` is a task object or a registered name), waits for the
    result (re-raising the task's exception) and its record. ``celery_run.apply(task, args, kwargs, timeout=...,
    propagate=False, **apply_async_options)`` for the rest."""

    def __init__(self, memory: CeleryMemory) -> None:
        self.memory = memory

    def __call__(self, task: Any, *args: Any, **kwargs: Any) -> TaskRun:
        return self.apply(task, args, kwargs)

    def _task(self, task: Any):
        if not isinstance(task, str):
            return task
        app = self.memory.app
        if task in app.tasks:
            return app.tasks[task]
        if self.memory.mode == "eager":
            raise KeyError(f"task {task!r} is not registered with the app {app.main!r}; import its module first")
        return app.signature(task)

    def apply(
        self,
        task: Any,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        timeout: float | None = None,
        propagate: bool = True,
        **options: Any,
    ) -> TaskRun:
        from celery.exceptions import TimeoutError as ResultTimeout

        from ..celery import task_memory

        limit = self.memory.timeout if timeout is None else timeout
        result = self._task(task).apply_async(tuple(args), dict(kwargs or {}), **options)
        try:
            value = result.get(timeout=limit, propagate=propagate, disable_sync_subtasks=False)
        except ResultTimeout as exc:
            alive = "" if self.memory._alive() else " (the worker died)"
            raise TimeoutError(f"task {result.id} gave no result within {limit:g}s{alive}: {exc}") from exc
        return TaskRun(result, value, task_memory(result, timeout=limit, app=self.memory.app))


@dataclass(frozen=True)
class TaskProblem:
    """A Celery task of the test that died with its worker process, or whose record never came: fails the test.

    Judged like a budget result (``exceeded``, ``line()``, ``as_dict()``), so it fails the call, appears in the
    report, the JSON file and the terminal summary's "over budget" list."""

    kind: str  # "worker_lost" or "no_record"
    task_id: str
    text: str

    exceeded = True

    def line(self) -> str:
        return self.text

    def as_dict(self) -> dict:
        return {"kind": self.kind, "task_id": self.task_id, "exceeded": True, "line": self.text}

    @classmethod
    def worker_lost(cls, record: Any) -> TaskProblem:
        peak = "?" if record.peak_delta_mb is None else f"{record.peak_delta_mb:.1f}MB"
        last = record.checkpoints[-1]["label"] if record.checkpoints else "START"
        return cls(
            "worker_lost",
            record.task_id,
            f"celery task {record.task_name} [{record.task_id}] WORKER_LOST: its worker process was killed by "
            f"{record.signal or 'a signal'} (suspected_oom={record.suspected_oom}); last seen at {last!r}, "
            f"peak {peak} above start",
        )

    @classmethod
    def no_record(cls, task_id: str, timeout: float, worker_alive: bool) -> TaskProblem:
        why = (
            "the worker process died"
            if not worker_alive
            else f"none came within {timeout:g}s (the task is still running or was never consumed)"
        )
        return cls(
            "no_record",
            task_id,
            f"celery task [{task_id}] sent by the test has no memory record: {why} "
            "(see the worker log section; raise --memguard-celery-timeout for slow tasks)",
        )
