"""Getting ``TaskMemory`` records back: ``task_memory(result)``, ``task_memories(results)`` and a collector.

The worker writes records in ``task_postrun``, which Celery fires *after* it stored the task's result, so a caller
whose ``result.get()`` just returned may be a few milliseconds ahead of the record: every read here waits, bounded
by ``timeout``, and fails with :class:`TaskMemoryTimeout` saying what to check.

:class:`TaskMemoryCollector` (``with collect_task_memories(app) as run: ...``) gathers every record produced while
it is open, from any script: eager records as they happen in this process, and worker records by the ids of the
tasks sent inside the block (plus the children those tasks sent, followed through each record's ``children``).
Messages sent inside the block also carry a ``memguard_run`` header with the collector's tag, propagated to child
tasks and retries, and stamped on each record as ``run_tag``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from celery import signals

from .records import TaskMemory
from .store import RecordStoreError, local_records, record_key, store_for

RUN_TAG_HEADER = "memguard_run"


class TaskMemoryTimeout(TimeoutError):
    """No record arrived in time; the message names the task and what usually causes it."""


def _records_dir(app) -> str | None:
    from .lifecycle import instrumentation
    from .options import resolve_options

    instr = instrumentation(app) if app is not None else None
    if instr is not None:
        return instr.options.records_dir
    return resolve_options(app, {})[0].records_dir if app is not None else None


class _Reader:
    """Reads records for one backend, local registry first, polling with backoff until a deadline."""

    def __init__(self, backend=None, app=None) -> None:
        self.backend = backend
        self.app = app if app is not None else getattr(backend, "app", None)
        self._store = None
        self._store_error: str | None = None

    def store(self):
        if self._store is None and self._store_error is None:
            try:
                # A bare task id comes with no backend: the app's (task_memory("<id>", app=app)).
                backend = self.backend if self.backend is not None or self.app is None else self.app.backend
                self._store = store_for(backend, _records_dir(self.app))
            except RecordStoreError as exc:
                self._store_error = str(exc)
        return self._store

    def read(self, task_id: str, attempt: int | None) -> TaskMemory | None:
        record = local_records.final(task_id) if attempt is None else local_records.attempt(task_id, attempt)
        if record is not None:
            return record
        store = self.store()
        if store is None:
            return None
        try:
            return store.read(record_key(task_id, attempt))
        except Exception:
            return None

    def wait(self, task_id: str, attempt: int | None, deadline: float) -> TaskMemory:
        delay = 0.005
        while True:
            record = self.read(task_id, attempt)
            if record is not None:
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskMemoryTimeout(self._explain(task_id, attempt))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)

    def _explain(self, task_id: str, attempt: int | None) -> str:
        what = "memory record" if attempt is None else f"memory record of attempt {attempt}"
        text = (
            f"no {what} for task {task_id} in time: check that the worker runs "
            "pytest_memguard.celery.instrument(app) (call it where the app is defined), that the task finished "
            "(result.get() first), and that worker and caller share the result backend"
        )
        if self._store_error:
            text += f"; also: {self._store_error}"
        return text


def _task_id(result: Any) -> str:
    task_id = result if isinstance(result, str) else getattr(result, "id", None)
    if not task_id:
        raise TypeError(f"expected an AsyncResult/EagerResult or a task id, got {type(result).__name__}: {result!r}")
    return task_id


def task_memory(async_result, timeout: float = 10.0, *, app=None) -> TaskMemory:
    """The final ``TaskMemory`` of a task (its last attempt), waiting up to ``timeout`` seconds for it.

    Works for ``apply()``/``task_always_eager`` (in-process registry) and for real workers (result backend).
    Raises :class:`TaskMemoryTimeout` when nothing arrives in time.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
    reader = _Reader(getattr(async_result, "backend", None), app or getattr(async_result, "app", None))
    return reader.wait(_task_id(async_result), None, time.monotonic() + timeout)


def _flatten(results: Any) -> list:
    if isinstance(results, str) or (hasattr(results, "id") and not hasattr(results, "results")):
        return [results]
    if hasattr(results, "results"):  # GroupResult / ResultSet
        return [r for item in results.results for r in _flatten(item)]
    if isinstance(results, Iterable):
        return [r for item in results for r in _flatten(item)]
    raise TypeError(f"expected results, a group result or task ids, got {type(results).__name__}")


def task_memories(results, timeout: float = 10.0, *, app=None, children: bool = True) -> list[TaskMemory]:
    """Every execution record of the given results (or ids): each attempt of a retried task in order, and with
    ``children`` the records of the tasks they sent, recursively. One ``timeout`` bounds the whole call."""
    deadline = time.monotonic() + timeout
    items = _flatten(results)
    readers: dict[int, _Reader] = {}
    records: list[TaskMemory] = []
    seen: set[str] = set()
    default_backend = app.backend if app is not None else None
    queue = [
        (_task_id(item), getattr(item, "backend", None) or default_backend, app or getattr(item, "app", None))
        for item in items
    ]
    while queue:
        task_id, backend, item_app = queue.pop(0)
        if task_id in seen:
            continue
        seen.add(task_id)
        reader = readers.setdefault(id(backend), _Reader(backend, item_app))
        final = reader.wait(task_id, None, deadline)
        attempts = [reader.wait(task_id, n, deadline) for n in range(final.attempt)]
        for record in [*attempts, final]:
            records.append(record)
            if children:
                queue.extend((child, backend, item_app) for child in record.children)
    return records


# -- the collector ---------------------------------------------------------------------------------------------------
_active: list[TaskMemoryCollector] = []
_active_lock = threading.Lock()


def active_run_tag() -> str | None:
    """The tag of the innermost open collector (stamped on eager records and on messages sent outside tasks)."""
    with _active_lock:
        return _active[-1].run_tag if _active else None


def _on_before_publish(sender=None, headers=None, **_):
    if headers is None:
        return
    from .lifecycle import current_run

    if current_run.get() is not None:
        return  # sent by a running task: the worker side notes it as a child
    with _active_lock:
        collectors = list(_active)
    if not collectors:
        return
    task_id = headers.get("id")
    headers.setdefault(RUN_TAG_HEADER, collectors[-1].run_tag)
    for collector in collectors:
        collector._sent(task_id)


class TaskMemoryCollector:
    """Collects the ``TaskMemory`` of every task run while it is open (see the module docstring).

    ``records(timeout)`` waits (bounded) for the records of every task sent inside the block and returns them with
    the eager ones, in the order they were produced or sent.
    """

    def __init__(self, app=None, run_tag: str | None = None) -> None:
        self.app = app
        self.run_tag = run_tag or f"run-{uuid.uuid4().hex[:12]}"
        self.task_ids: list[str] = []
        self._local: list[TaskMemory] = []
        self._lock = threading.Lock()
        self._open = False

    def _sent(self, task_id: str | None) -> None:
        if task_id:
            with self._lock:
                self.task_ids.append(task_id)

    def _on_local(self, record: TaskMemory) -> None:
        if record.pool == "eager" or record.run_tag == self.run_tag:
            with self._lock:
                self._local.append(record)

    def __enter__(self) -> TaskMemoryCollector:
        local_records.subscribe(self._on_local)
        with _active_lock:
            _active.append(self)
            signals.before_task_publish.connect(_on_before_publish, weak=False, dispatch_uid="memguard.collect")
        self._open = True
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        local_records.unsubscribe(self._on_local)
        with _active_lock:
            if self in _active:
                _active.remove(self)
            if not _active:
                signals.before_task_publish.disconnect(_on_before_publish, dispatch_uid="memguard.collect")

    def records(self, timeout: float = 10.0) -> list[TaskMemory]:
        """Every record of this run: eager ones, then those of the tasks sent (all attempts, children)."""
        with self._lock:
            local = list(self._local)
            ids = list(dict.fromkeys(self.task_ids))
        remote = task_memories(ids, timeout, app=self.app) if ids else []
        seen = {(r.task_id, r.attempt) for r in local}
        return local + [r for r in remote if (r.task_id, r.attempt) not in seen]


def collect_task_memories(app=None, run_tag: str | None = None) -> TaskMemoryCollector:
    """``with collect_task_memories(app) as run: ...; run.records()`` — see :class:`TaskMemoryCollector`."""
    return TaskMemoryCollector(app, run_tag)
