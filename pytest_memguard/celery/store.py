"""Where ``TaskMemory`` records go, and how the caller gets them back.

The channel: the worker writes each record under its own key in the **result backend's key-value store**
(``memguard-task-<id>`` for the final record, ``memguard-task-<id>-attempt-<n>`` for each retried attempt); with
the ``file://`` backend, as lines of per-process journals in ``memguard-records/`` beside the results
(:class:`FolderStore`), since a file per key costs a file creation per task.

Why this shape (read against ``celery/app/trace.py``): Celery stores the task's result (``mark_as_done``) *before*
``task_success`` and ``task_postrun`` fire, and the task's memory is only known after its last byte ran. So the
record cannot ride inside the result without changing the return value or racing it; it is written in
``task_postrun`` under a key of its own, and :func:`~pytest_memguard.celery.task_memory` waits (bounded) for that
key after the result is ready. Retries reuse the task id, and attempt *n+1* may finish before attempt *n*'s
``task_postrun`` ran, so each attempt has its own key and only a terminal state writes the final key.

Eager execution (``apply()``, ``task_always_eager``) keeps its records in a bounded in-process registry and needs no
backend at all. Backends without a key-value API (``rpc://``, database) use a folder instead (option
``records_dir``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .records import TaskMemory

KEY_PREFIX = "memguard-task-"
LOCAL_CAPACITY = 10_000

_unsafe = re.compile(r"[^A-Za-z0-9_.-]")


def record_key(task_id: str, attempt: int | None = None) -> str:
    """The key of a task's final record (``attempt=None``) or of one attempt's record."""
    safe = _unsafe.sub("_", str(task_id))
    return f"{KEY_PREFIX}{safe}" if attempt is None else f"{KEY_PREFIX}{safe}-attempt-{int(attempt)}"


def keys_for(record: TaskMemory) -> list[str]:
    """Keys a record is written under: its attempt's key for a retry, the final key for a terminal state."""
    return [record_key(record.task_id)] if record.terminal else [record_key(record.task_id, record.attempt)]


class LocalRecords:
    """The in-process registry: the last :data:`LOCAL_CAPACITY` records by (task id, attempt), plus listeners.

    Listeners are how a collector sees eager records the moment they are produced.
    """

    def __init__(self, capacity: int = LOCAL_CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, int], TaskMemory] = OrderedDict()
        self._final: dict[str, int] = {}
        self._listeners: list[Callable[[TaskMemory], None]] = []

    def add(self, record: TaskMemory) -> None:
        key = (record.task_id, record.attempt)
        with self._lock:
            self._records[key] = record
            self._records.move_to_end(key)
            if record.terminal:
                self._final[record.task_id] = record.attempt
            while len(self._records) > self.capacity:
                (old_id, old_attempt), _ = self._records.popitem(last=False)
                if self._final.get(old_id) == old_attempt:
                    del self._final[old_id]
            listeners = list(self._listeners)
        for listener in listeners:
            listener(record)

    def final(self, task_id: str) -> TaskMemory | None:
        with self._lock:
            attempt = self._final.get(task_id)
            return None if attempt is None else self._records.get((task_id, attempt))

    def attempt(self, task_id: str, attempt: int) -> TaskMemory | None:
        with self._lock:
            return self._records.get((task_id, attempt))

    def has_listeners(self) -> bool:
        return bool(self._listeners)  # a read of a list's length: no lock needed for a yes/no

    def subscribe(self, listener: Callable[[TaskMemory], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[TaskMemory], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def discard(self, records: Iterable[TaskMemory]) -> None:
        """Forget these records (a leak hunt drops each re-run's records once its collector has read them, so the
        registry's own growth is not taken for the test's leak)."""
        with self._lock:
            for record in records:
                self._records.pop((record.task_id, record.attempt), None)
                if self._final.get(record.task_id) == record.attempt:
                    del self._final[record.task_id]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._final.clear()


local_records = LocalRecords()


class RecordStoreError(RuntimeError):
    """Records cannot be delivered or read with this configuration; the message says what to configure."""


class BackendStore:
    """Records in a Celery result backend's key-value API (Redis, file, memcached, …): ``set``/``get``."""

    #: Each write is a round trip to a server: worth batching off the task's path (:mod:`.delivery`).
    round_trip_per_write = True

    def __init__(self, backend) -> None:
        self.backend = backend
        # Backends differ in key type (the file backend joins bytes paths, Redis takes str): Celery's key_t says.
        self._key_t = getattr(backend, "key_t", str)

    def write(self, record: TaskMemory) -> None:
        self.backend.set(self._key_t(keys_for(record)[0]), record.to_json())

    def write_many(self, records: list[TaskMemory]) -> None:
        """Write a batch: one pipelined round trip with Redis (expiring like results), else one write each."""
        if _is_redis_backend(self.backend):
            expires = self.backend.expires
            with self.backend.client.pipeline() as pipe:
                for record in records:
                    key = self._key_t(keys_for(record)[0])
                    if expires:
                        pipe.setex(key, int(expires), record.to_json())
                    else:
                        pipe.set(key, record.to_json())
                pipe.execute()
            return
        for record in records:
            self.write(record)

    def _key(self, key: str):
        return self._key_t(key)

    def read(self, key: str) -> TaskMemory | None:
        value = self.backend.get(self._key(key))
        if not value:
            return None
        return TaskMemory.from_json(value)

    def __repr__(self) -> str:
        return f"<BackendStore {type(self.backend).__name__}>"


class FolderStore:
    """Records as lines (:meth:`TaskMemory.to_line`, a JSON array) appended to per-process journals in a folder
    that callers and workers share.

    Used with the ``file://`` result backend (in its folder, ``memguard-records/``) and for backends without a
    key-value API (``records_dir``). Why journals rather than a file per record: creating and renaming a file cost
    ~95 µs on our disks, appending ~3 µs. Each process appends whole batches, with one ``write``, to a journal of its
    own (``<host>-<pid>-<ns>.jsonl``), so lines never interleave; a reader follows every journal from where it last
    stopped and only takes complete lines (a process killed mid-write leaves a torn last line that is never read).
    A journal is rotated at :attr:`ROTATE_BYTES`; journals are not deleted (like the file backend's own results).
    """

    ROTATE_BYTES = 64 << 20
    #: A write is one local append: cheaper inline than handed to a writer thread (see ``Instrumentation``).
    round_trip_per_write = False
    #: How many records a reading process keeps indexed (oldest forgotten first).
    INDEX_CAPACITY = 200_000

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._written = 0
        self._offsets: dict[str, int] = {}
        self._index: OrderedDict[str, TaskMemory] = OrderedDict()
        _folder_stores.add(self)

    # -- writing (workers) -------------------------------------------------------------------------------------
    def write(self, record: TaskMemory) -> None:
        self.write_line(record.to_line())

    def write_many(self, records: list[TaskMemory]) -> None:
        self._append(b"".join(record.to_line().encode() + b"\n" for record in records))

    def write_line(self, line: str) -> None:
        """Append one line made by :meth:`TaskMemory.to_line` or :class:`~.records.SuccessLines` (ASCII JSON)."""
        self._append(f"{line}\n".encode())

    def _append(self, data: bytes) -> None:
        with self._lock:
            fd = self._fd
            if fd is None or self._written + len(data) > self.ROTATE_BYTES:
                fd = self._open_journal()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._written += len(data)

    def _open_journal(self) -> int:
        """A new journal of this process's own (the first write, a rotation, or the first write after a fork)."""
        if self._fd is not None:
            os.close(self._fd)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(os.path.join(self.folder, name), flags, 0o644)
        self._written = 0
        return self._fd

    def _after_fork_in_child(self) -> None:
        # The inherited descriptor is the parent's journal: this process writes one of its own (closing our copy
        # of the descriptor leaves the parent's open).
        self._lock = threading.Lock()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._written = 0

    # -- reading (callers) -------------------------------------------------------------------------------------
    def read(self, key: str) -> TaskMemory | None:
        with self._lock:
            record = self._index.get(key)
            if record is None:
                self._follow()
                record = self._index.get(key)
            return record

    def _follow(self) -> None:
        """Index the complete lines appended to every journal since the last call."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(".jsonl"):
                continue
            offset = self._offsets.get(entry.name, 0)
            try:
                with open(entry.path, "rb") as journal:
                    journal.seek(offset)
                    chunk = journal.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            for line in chunk[:end].split(b"\n"):
                try:
                    record = TaskMemory.from_line(line)
                except ValueError:  # not a record (JSONDecodeError is a ValueError): skip the line, keep the rest
                    continue
                for key in keys_for(record):
                    self._index[key] = record
                    self._index.move_to_end(key)
            self._offsets[entry.name] = offset + end + 1
        while len(self._index) > self.INDEX_CAPACITY:
            self._index.popitem(last=False)

    def __repr__(self) -> str:
        return f"<FolderStore {self.folder}>"


_folder_stores: weakref.WeakSet[FolderStore] = weakref.WeakSet()


def _folder_stores_after_fork() -> None:
    for store in list(_folder_stores):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_folder_stores_after_fork)

RECORDS_FOLDER = "memguard-records"


def _is_file_backend(backend) -> bool:
    from celery.backends.filesystem import FilesystemBackend

    return isinstance(backend, FilesystemBackend)


def _is_redis_backend(backend) -> bool:
    try:
        from celery.backends.redis import RedisBackend
    except ImportError:  # the redis package is an extra
        return False
    return isinstance(backend, RedisBackend)


def has_key_value_api(backend) -> bool:
    from celery.backends.base import BaseKeyValueStoreBackend

    return isinstance(backend, BaseKeyValueStoreBackend)


def store_for(backend, records_dir: str | None = None):
    """The store to use with this backend: the folder when configured, else the backend's key-value API.

    Raises :class:`RecordStoreError` naming the backend and the fix when neither is possible.
    """
    if records_dir:
        return FolderStore(records_dir)
    if _is_file_backend(backend):  # key-value too, but a file per key: journals beside the results are far cheaper
        return FolderStore(os.path.join(os.fsdecode(backend.path), RECORDS_FOLDER))
    if backend is not None and has_key_value_api(backend):
        return BackendStore(backend)
    name = type(backend).__name__ if backend is not None else "no backend"
    raise RecordStoreError(
        f"memory records cannot travel through the result backend {name} (it has no key-value API); "
        "use a Redis or file:// result backend, or set memguard_records_dir (MEMGUARD_RECORDS_DIR) to a folder "
        "that both the worker and the caller can read"
    )
