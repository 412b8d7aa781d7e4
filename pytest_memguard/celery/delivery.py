"""Writing ``TaskMemory`` records off the task's path, in batches, for stores where a write is a round trip.

Why: writing each record inline in ``task_postrun`` is one more round trip per task with Redis (and the other
key-value servers). Here the task only appends its record to a list; a writer thread wakes when the first
record of a batch arrives, waits ``interval_s`` for the rest of the burst, and writes them all (one pipeline with
Redis). A busy worker therefore pays one thread wake-up per batch, not per task — a thread woken *per record* was
measured slower than writing inline (its GIL hand-offs cost more than the write). The same holds for a cheap local
write: the embedded backend's journals (an append, ~3 µs) are written inline, not through this.

The price, stated: a record reaches the backend up to about ``interval_s`` after its task (``task_memory()`` waits
for it anyway), and records still pending when a process is SIGKILLed are lost with it. Pending records are flushed
when a worker process shuts down (Celery's ``worker_process_shutdown``/``worker_shutdown``) and at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from .records import TaskMemory

logger = logging.getLogger("pytest_memguard.celery")

_writers: weakref.WeakSet[BatchedWriter] = weakref.WeakSet()


class BatchedWriter:
    """Collects records and writes them with ``write_many`` from one background thread."""

    def __init__(self, write_many: Callable[[list[TaskMemory]], None], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"a batch interval must be > 0 seconds, got {interval_s!r}")
        self.write_many = write_many
        self.interval_s = interval_s
        self._lock = threading.Lock()  # guards _pending, _signalled and the thread's start
        self._flush_lock = threading.Lock()  # one flush at a time (the thread, or shutdown)
        self._pending: list[TaskMemory] = []
        self._signalled = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure_logged = False
        _writers.add(self)

    def submit(self, record: TaskMemory) -> None:
        """Queue ``record``; the task's cost is an append, plus one wake-up per batch."""
        with self._lock:
            self._pending.append(record)
            if self._signalled:
                return
            self._signalled = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="memguard-records", daemon=True)
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write what is pending now; returns how many records were written (or attempted)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                self._signalled = False
                self._wake.clear()
            if batch:
                try:
                    self.write_many(batch)
                except Exception as exc:  # delivery must never disturb the worker
                    if not self._failure_logged:
                        self._failure_logged = True
                        logger.warning(
                            "memguard: cannot deliver %d memory record(s) (%s); tasks are unaffected", len(batch), exc
                        )
            return len(batch)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval_s)  # let the rest of the burst join this batch
            self.flush()

    def _after_fork_in_child(self) -> None:
        # The parent's pending records are the parent's to write; this process starts empty, with its own thread.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = []
        self._signalled = False
        self._wake = threading.Event()
        self._thread = None


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_all() -> int:
    """Flush every writer of this process (worker shutdown, interpreter exit, tests)."""
    return sum(writer.flush() for writer in list(_writers))


atexit.register(flush_all)
