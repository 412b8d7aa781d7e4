"""Where ``TaskMemory`` records go, and how the caller gets them back.

The channel: the worker writes each record under its own key in the **result backend's key-value store**
(``memguard-task-<id>`` for the final record, ``memguard-task-<id>-attempt-<n>`` for each retried attempt).

Why this shape (read against ``celery/app/trace.py``): Celery stores the task's result (``mark_as_done``) *before*
``task_success`` and ``task_postrun`` fire, and the task's memory is only known after its last byte ran. So the
record cannot ride inside the result without changing the return value or racing it; it is written in
``task_postrun`` under a key of its own, and :func:`~pytest_memguard.celery.task_memory` waits (bounded) for that
key after the result is ready. Retries reuse the task id, and attempt *n+1* may finish before attempt *n*'s
``task_postrun`` ran, so each attempt has its own key and only a terminal state writes the final key.

Every record is also kept in a bounded in-process registry: eager execution (``apply()``, ``task_always_eager``)
and in-process workers need no backend at all. Backends without a key-value API (``rpc://``, database) use a
folder instead (option ``records_dir``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .records import TaskMemory
from .transport import atomic_write

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

    def __init__(self, backend) -> None:
        self.backend = backend
        # Backends differ in key type (the file backend joins bytes paths, Redis takes str): Celery's key_t says.
        self._key_t = getattr(backend, "key_t", str)

    def write(self, record: TaskMemory) -> None:
        text = record.to_json()
        key = record_key(record.task_id) if record.terminal else record_key(record.task_id, record.attempt)
        self.backend.set(self._key_t(key), text)

    def write_many(self, records: list[TaskMemory]) -> None:
        """Write a batch: one pipelined round trip with Redis (expiring like results), else one write each."""
        client = getattr(self.backend, "client", None)
        if client is not None and hasattr(client, "pipeline") and _is_redis_backend(self.backend):
            expires = getattr(self.backend, "expires", None)
            with client.pipeline() as pipe:
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
    """Records as JSON files in a folder shared by caller and workers (for backends without a key-value API)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)

    def write(self, record: TaskMemory) -> None:
        data = record.to_json().encode()
        for key in keys_for(record):
            atomic_write(self.folder, key + ".json", data)

    def write_many(self, records: list[TaskMemory]) -> None:
        for record in records:
            self.write(record)

    def read(self, key: str) -> TaskMemory | None:
        try:
            with open(os.path.join(self.folder, key + ".json"), "rb") as f:
                return TaskMemory.from_json(f.read())
        except FileNotFoundError:
            return None
        except (ValueError, json.JSONDecodeError):
            return None

    def __repr__(self) -> str:
        return f"<FolderStore {self.folder}>"


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
    if backend is not None and has_key_value_api(backend):
        return BackendStore(backend)
    name = type(backend).__name__ if backend is not None else "no backend"
    raise RecordStoreError(
        f"memory records cannot travel through the result backend {name} (it has no key-value API); "
        "use a Redis or file:// result backend, or set memguard_records_dir (MEMGUARD_RECORDS_DIR) to a folder "
        "that both the worker and the caller can read"
    )
