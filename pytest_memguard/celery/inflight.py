"""What a running task persists so that its death can still be reported.

A prefork child killed by SIGKILL (the OOM killer, ``exit 137``) takes its memory figures with it; its parent only
learns ``WorkerLostError``. So while a task runs in a prefork child, the child keeps its state in a *slot*: one
small file per process (and thread), rewritten in place with a single ``pwrite`` at START and at each checkpoint —
no fsync (the page cache outlives the process), and no file created, renamed or removed per task. A file per task
cost a create, a rename and an unlink on every task (~40 µs in a hot loop here, before the journal's metadata
work): more than the rest of the instrumentation. The parent, on ``task_failure`` with ``WorkerLostError``, finds
the slot that holds the lost task's id and turns it into a ``WORKER_LOST`` record: last checkpoint and peak seen,
the signal, and whether an OOM kill is suspected. A finished task's state simply stays in the slot until the next
START overwrites it: it is found by task id, so it cannot be mistaken for another task's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal as signals
import socket
import threading
import time

from ..runtime.cgroup import current_cgroup_memory
from .records import WORKER_LOST, TaskMemory

_SIGNAL_RE = re.compile(r"signal (\d+)")


SLOT_PREFIX = "slot-"
#: A rewrite shorter than the slot's content is padded with spaces (JSON allows trailing whitespace) rather than
#: truncated, up to this much padding: one system call per write in the common case.
_PAD_LIMIT = 4096
_encode_state = json.JSONEncoder(separators=(",", ":")).encode


class InflightSlot:
    """One process's (or thread's) slot file: the state of the task it is running, rewritten whole, in place."""

    #: How often a write checks that the slot file still has a name (a temp cleaner may delete the file of an idle
    #: worker; writes to the unlinked file would succeed and the parent would find nothing).
    RECHECK_S = 60.0

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(
            folder, f"{SLOT_PREFIX}{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}.json"
        )
        self.fd: int | None = None
        self.pid = os.getpid()  # a slot belongs to one process (forgotten at fork)
        self._open()

    def _open(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd, self.size, self.checked_at = fd, 0, time.monotonic()

    def write(self, state: dict) -> None:
        now = time.monotonic()
        if now - self.checked_at > self.RECHECK_S:
            self.checked_at = now
            if os.fstat(self.fd).st_nlink == 0:  # deleted under us: give the slot a file again
                self._open()
        data = _encode_state(state).encode()
        shorter_by = self.size - len(data)
        if shorter_by > _PAD_LIMIT:
            os.ftruncate(self.fd, len(data))
        elif shorter_by > 0:
            data += b" " * shorter_by
        os.pwrite(self.fd, data, 0)
        self.size = len(data)

    def close(self, remove: bool = True) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


_slots: dict[tuple[str, int], InflightSlot] = {}


def slot_for(folder: str) -> InflightSlot:
    """This thread's slot in ``folder`` (opened on first use; a prefork child has one thread, so one slot)."""
    key = (folder, threading.get_ident())
    slot = _slots.get(key)
    if slot is None:
        slot = _slots[key] = InflightSlot(folder)
    return slot


def close_slots() -> None:
    """Remove this process's slots: it is stopping normally, so there is no death left to report."""
    for slot in list(_slots.values()):
        slot.close()
    _slots.clear()


def _forget_slots_after_fork() -> None:
    # The parent's slots are the parent's: a child opens its own (and must not remove the parent's files).
    for slot in list(_slots.values()):
        slot.close(remove=False)
    _slots.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_slots_after_fork)
atexit.register(close_slots)


#: Figures a slot holds as whole counts, and the record's names and units they are read back as (see
#: :class:`InflightFile`): (persisted key, record key, counts per record unit).
_COUNTED = (
    ("start_kib", "start_mb", 1024),
    ("peak_kib", "peak_mb", 1024),
    ("last_rss_kib", "last_rss_mb", 1024),
    ("limit_kib", "limit_mb", 1024),
    ("started_us", "started_at", 1e6),
)


def kib(mb: float | None) -> int | float | None:
    """``mb`` as whole KiB when it is one (RSS and limits are), else as fractional KiB."""
    if mb is None:
        return None
    count = mb * 1024
    return int(count) if count.is_integer() else count


class InflightFile:
    """The persisted state of one running task, in its process's slot (see the module docstring).

    Written at START of every task in a prefork child, so it is kept cheap: its figures are whole counts
    (``start_kib``, ``peak_kib``, ``last_rss_kib``, ``limit_kib``, ``started_us``; a float's shortest repr in JSON is
    ~8,700 instructions, an int's a few hundred) and ``pid`` is the slot's. :func:`read_inflight` gives them back as
    the record's MB and seconds."""

    def __init__(self, folder: str, state: dict) -> None:
        self.slot = slot_for(folder)
        if "pid" not in state:
            state["pid"] = self.slot.pid
        self.state = state
        self.write()

    def write(self) -> None:
        self.slot.write(self.state)

    def on_checkpoint(self, entry: dict) -> None:
        self.state["checkpoints"].append(entry)
        peak = kib(entry.get("peak_mb"))
        if peak is not None and (self.state.get("peak_kib") or 0) < peak:
            self.state["peak_kib"] = peak
        self.state["last_rss_kib"] = kib(entry.get("rss_mb"))
        self.write()


def _figures_in_record_units(state: dict) -> dict:
    for counted, name, per_unit in _COUNTED:
        if counted in state:
            count = state.pop(counted)
            state[name] = None if count is None else count / per_unit
    return state


def read_inflight(folder: str, task_id: str) -> dict | None:
    """The state a (dead) process persisted for ``task_id``, or ``None``; its figures in the record's units
    (``start_mb``, ``peak_mb``, ``last_rss_mb``, ``limit_mb``, ``started_at``). The slot it was found in is removed when
    its process is gone; so are other slots of dead processes left for over a day (workers killed whole)."""
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(SLOT_PREFIX)]
    except OSError:
        return None
    found = None
    for entry in entries:
        try:
            with open(entry.path, "rb") as f:
                state = json.loads(f.read())
        except (OSError, ValueError):  # being rewritten, or torn by a kill mid-write
            continue
        if not isinstance(state, dict):
            continue
        mine = found is None and state.get("task_id") == task_id
        if mine:
            found = _figures_in_record_units(state)
        if _process_gone(state.get("pid")) and (mine or _older_than(entry, 86400)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    return found


def _process_gone(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    return False


def _older_than(entry: os.DirEntry, seconds: float) -> bool:
    try:
        return time.time() - entry.stat().st_mtime > seconds
    except OSError:
        return False


def signal_from_exception(exc: BaseException) -> str | None:
    """``SIGKILL`` from billiard's ``Worker exited prematurely: signal 9 (SIGKILL) Job: 0.``"""
    match = _SIGNAL_RE.search(str(exc))
    if not match:
        return None
    number = int(match.group(1))
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def oom_kill_count() -> int | None:
    """OOM kills so far in this process's memory cgroup (``None`` where the cgroup does not say)."""
    try:
        cgroup = current_cgroup_memory()
    except Exception:
        return None
    return None if cgroup is None else cgroup.oom_kill


def worker_lost_record(
    task_id: str,
    task_name: str,
    exc: BaseException,
    persisted: dict | None,
    *,
    oom_kills_before: int | None,
    oom_kills_now: int | None,
    limit_mb: float | None,
    near_percent: float,
    hostname: str | None = None,
) -> TaskMemory:
    """Build the ``WORKER_LOST`` record from what the child persisted and what the parent can see now.

    ``suspected_oom`` is True when the child died by SIGKILL and either the cgroup's OOM-kill count rose or the
    last RSS it reported was at least ``near_percent`` of the limit; False when it died by SIGKILL without either
    sign, or by another signal; ``None`` when the signal is unknown.
    """
    state = persisted or {}
    sig = signal_from_exception(exc)
    if not limit_mb:
        limit_mb = state.get("limit_mb")
    last_rss = state.get("last_rss_mb") or state.get("start_mb")
    peak = state.get("peak_mb")
    start = state.get("start_mb")
    oom_rose = oom_kills_before is not None and oom_kills_now is not None and oom_kills_now > oom_kills_before
    near_limit = bool(limit_mb) and max(last_rss or 0, peak or 0) >= limit_mb * near_percent / 100.0
    if sig is None:
        suspected = True if oom_rose else None
    else:
        suspected = sig == "SIGKILL" and (oom_rose or near_limit)
    errors = [] if persisted else ["the child persisted no state (died before START, or persist_running is off)"]
    started_at = state.get("started_at")
    return TaskMemory(
        task_id=task_id,
        task_name=state.get("task_name") or task_name,
        state=WORKER_LOST,
        pid=state.get("pid"),
        hostname=state.get("hostname") or hostname,
        pool=state.get("pool"),
        attempt=state.get("attempt", 0),
        start_mb=start,
        finish_mb=None,
        peak_mb=peak,
        delta_mb=None,
        peak_delta_mb=round(peak - start, 3) if peak is not None and start is not None else None,
        peak_source=state.get("peak_source"),
        checkpoints=state.get("checkpoints", []),
        started_at=started_at,
        duration_s=round(time.time() - started_at, 3) if started_at else None,
        limit_mb=limit_mb,
        exception=f"{type(exc).__name__}: {exc}",
        signal=sig,
        suspected_oom=suspected,
        run_tag=state.get("run_tag"),
        errors=errors,
    )
