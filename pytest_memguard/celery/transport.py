"""A server-less kombu transport that survives a soak: kombu's ``filesystem://`` with its measured defects fixed.

Why not kombu's own: on our machines (``shared/MEASUREMENTS.md``) its producer wrote message files in place, so a
consumer could read half a message (the worker died with ``JSONDecodeError`` after a few hundred tasks); consumers
claimed a file with ``shutil.move`` into the temp dir, which degrades to copy-then-delete across filesystems (two
consumers can then both deliver it); the exchange table was created then locked, so a reader could parse an empty
file; and the worker polled once a second. Here:

* a message is written to a hidden ``.tmp`` folder and renamed into the queue folder: a reader sees all or nothing;
* a consumer claims a message by renaming it into ``.claimed`` on the same filesystem: exactly one claimant wins;
* exchange tables are replaced atomically under a lock file;
* the polling interval defaults to 50 ms (``transport_options={"polling_interval": ...}`` to tune);
* the directory listing is cached per queue and refilled only when drained, so a backlog of N messages costs O(N)
  to consume instead of O(N²).

Registered with kombu as ``memguard-fs://`` when this module is imported (``pytest_memguard.celery`` imports it).
Folders come from the same transport options as kombu's (``data_folder_in``, ``data_folder_out``,
``control_folder``); :func:`pytest_memguard.celery.embedded.embedded_app_config` fills them in from one folder.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

TRANSPORT_NAME = "memguard-fs"
DEFAULT_POLLING_INTERVAL_S = 0.05

_TMP = ".tmp"
_CLAIMED = ".claimed"
_counter = itertools.count()
_known_dirs: set[str] = set()  # .tmp folders already created (a makedirs per write would cost a syscall)


def _unique_sortable_name(queue: str) -> str:
    """``<ns time>_<pid>_<seq>_<uuid>.<queue>.msg``: sorts by send time; no dot before the queue name (kombu's
    format, so tools reading kombu's folders still understand it)."""
    return f"{time.time_ns():020d}_{os.getpid()}_{next(_counter):09d}_{uuid.uuid4().hex}.{queue}.msg"


def atomic_write(folder: str | os.PathLike, name: str, data: bytes) -> str:
    """Write ``data`` to ``folder/name`` so that no reader ever sees a partial file (temp file + rename).

    The temp file lives in ``folder/.tmp`` (same filesystem, so the rename is atomic) under a name unique to this
    process and call, so concurrent writers of the same name never clash: the last rename wins whole."""
    tmp_dir = os.path.join(folder, _TMP)
    tmp_path = os.path.join(tmp_dir, f"{name}.{os.getpid()}.{next(_counter)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if tmp_dir not in _known_dirs:
        os.makedirs(tmp_dir, exist_ok=True)
        _known_dirs.add(tmp_dir)
    try:
        fd = os.open(tmp_path, flags, 0o644)
    except FileNotFoundError:  # the folder was removed since we created it
        os.makedirs(tmp_dir, exist_ok=True)
        fd = os.open(tmp_path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    final = os.path.join(folder, name)
    os.rename(tmp_path, final)
    return final


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic publish, exclusive claims and a cached listing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: dict[str, deque[str]] = {}
        self._listed_at = float("-inf")
        self._relist_s = getattr(self.connection, "polling_interval", None) or DEFAULT_POLLING_INTERVAL_S
        self._table_lock = threading.Lock()
        for folder in {self.data_folder_in, self.data_folder_out}:
            os.makedirs(os.path.join(folder, _TMP), exist_ok=True)
        os.makedirs(os.path.join(self.data_folder_in, _CLAIMED), exist_ok=True)
        self.control_folder.mkdir(parents=True, exist_ok=True)

    # -- messages --------------------------------------------------------------------------------------------
    def _put(self, queue, payload, **kwargs):
        try:
            atomic_write(self.data_folder_out, _unique_sortable_name(queue), str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to queue {queue!r} in {self.data_folder_out!r}: {exc}") from exc

    def _candidates(self, queue: str) -> deque[str]:
        """Names of ``queue``'s messages, oldest first, from one listing of the folder shared by every queue.

        An empty queue (the worker's pidbox, an idle queue) must not relist the folder on every poll: with a
        backlog of thousands of files that listing is the whole cost of a ``_get``. So the folder is listed at
        most once per polling interval for queues with nothing pending (the latency a poll has anyway)."""
        pending = self._pending.get(queue)
        if pending:
            return pending
        now = time.monotonic()
        if now - self._listed_at < self._relist_s:
            return pending if pending is not None else deque()
        self._listed_at = now
        try:
            names = sorted(os.listdir(self.data_folder_in))
        except FileNotFoundError:
            names = []
        by_queue: dict[str, deque[str]] = {}
        for name in names:
            rest = name.partition(".")[2]
            if rest.endswith(".msg"):
                by_queue.setdefault(rest[:-4], deque()).append(name)
        self._pending = by_queue
        return by_queue.get(queue) or deque()

    def _get(self, queue):
        pending = self._candidates(queue)
        claimed_dir = os.path.join(self.data_folder_in, _CLAIMED)
        while pending:
            name = pending.popleft()
            claimed = os.path.join(claimed_dir, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                if self.store_processed:
                    os.replace(claimed, os.path.join(self.processed_folder, name))
                else:
                    os.unlink(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read message file {claimed!r}: {exc}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    def _purge(self, queue):
        self._pending.pop(queue, None)
        self._listed_at = float("-inf")
        return super()._purge(queue)

    # -- exchange tables -------------------------------------------------------------------------------------
    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot read exchange table {file}: {exc}") from exc
        return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(data))]

    def _update_table(self, exchange, change) -> None:
        """Read-modify-replace an exchange table under an exclusive lock file; readers never see a partial table."""
        file = self._exchange_file(exchange)
        lock_path = Path(self.control_folder) / ".lock"
        with self._table_lock, open(lock_path, "ab") as lock_file:
            filesystem.lock(lock_file, filesystem.LOCK_EX)
            try:
                queues = self.get_table(exchange)
                updated = change(list(queues))
                if updated != queues:
                    written = atomic_write(
                        self.control_folder, f".{uuid.uuid4().hex}.new", str_to_bytes(dumps(updated))
                    )
                    os.replace(written, file)
            finally:
                filesystem.unlock(lock_file)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: queues if entry in queues else [entry, *queues])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: [q for q in queues if q != entry])


class Transport(filesystem.Transport):
    """``memguard-fs://``: see the module docstring."""

    Channel = Channel
    polling_interval = DEFAULT_POLLING_INTERVAL_S
    driver_type = TRANSPORT_NAME
    driver_name = TRANSPORT_NAME


def register() -> None:
    """Make ``memguard-fs://`` a kombu transport alias (idempotent; done on import)."""
    TRANSPORT_ALIASES.setdefault(TRANSPORT_NAME, f"{__name__}:Transport")


register()
