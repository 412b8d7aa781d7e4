"""What a running task persists so that its death can still be reported.

A prefork child killed by SIGKILL (the OOM killer, ``exit 137``) takes its memory figures with it; its parent only
learns ``WorkerLostError``. So while a task runs in a prefork child, the child keeps a small JSON file per task
(written at START and at each checkpoint: one ~10 µs write, no fsync — the page cache outlives the process), and
removes it when the task finishes. The parent, on ``task_failure`` with ``WorkerLostError``, turns the file into a
``WORKER_LOST`` record: last checkpoint and peak seen, the signal, and whether an OOM kill is suspected.
"""

from __future__ import annotations

import json
import os
import re
import signal as signals
import time

from ..runtime.cgroup import current_cgroup_memory
from .records import WORKER_LOST, TaskMemory
from .store import record_key
from .transport import atomic_write

_SIGNAL_RE = re.compile(r"signal (\d+)")


class InflightFile:
    """The persisted state of one running task, rewritten whole (atomically) on each update."""

    def __init__(self, folder: str, task_id: str, state: dict) -> None:
        self.folder = folder
        self.name = record_key(task_id) + ".json"
        self.state = state
        self.write()

    def write(self) -> None:
        try:
            atomic_write(self.folder, self.name, json.dumps(self.state, separators=(",", ":")).encode())
        except OSError:
            os.makedirs(self.folder, exist_ok=True)
            atomic_write(self.folder, self.name, json.dumps(self.state, separators=(",", ":")).encode())

    def on_checkpoint(self, entry: dict) -> None:
        self.state["checkpoints"].append(entry)
        peak = entry.get("peak_mb")
        if peak is not None and (self.state.get("peak_mb") or 0) < peak:
            self.state["peak_mb"] = peak
        self.state["last_rss_mb"] = entry.get("rss_mb")
        self.write()

    def remove(self) -> None:
        try:
            os.unlink(os.path.join(self.folder, self.name))
        except FileNotFoundError:
            pass


def read_inflight(folder: str, task_id: str) -> dict | None:
    path = os.path.join(folder, record_key(task_id) + ".json")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    return data


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
