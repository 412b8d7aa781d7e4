"""Find Celery worker processes and describe their memory.

Why from command lines: the seed ran ``docker exec ... ps aux | grep celery``; reading ``/proc`` through psutil
gives the same processes with no Docker and no parsing of ``ps`` columns. A prefork worker is one main process
plus pool children forked from it (they share its command line), so a process whose parent also matches is a
child, and every descendant of a main process is listed under it even when its command line differs.

Percentages are of the effective limit of the cgroup ``memguard`` itself runs in (min of host RAM and the cgroup
limit, :func:`pytest_memguard.runtime.cgroup.effective_limit_bytes`): run ``memguard`` inside the worker's
container, as the seed's ``docker exec`` did, and it is the limit that OOM-kills the worker.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from ..runtime.system import percent_of
from .usage import redact_secrets

# A celery command line with the ``worker`` subcommand after it: ``celery -A proj worker``, ``python -m celery
# worker``; not ``celery beat`` or ``celery flower``.
DEFAULT_PATTERN = r"celery\b.*\bworker\b"


@dataclass(frozen=True)
class FoundProcess:
    """A process picked for watching or reporting, with its place in its worker's tree."""

    process: psutil.Process
    role: str  # "main" or "child"
    main_pid: int


@dataclass
class WorkerProcess:
    """One worker process's figures; ``None`` means unknown (e.g. USS not requested, or access denied)."""

    pid: int
    ppid: int | None
    main_pid: int
    role: str
    name: str
    cmdline: str  # URL passwords replaced by ***
    rss_bytes: int | None
    uss_bytes: int | None
    percent_of_limit: float | None
    age_s: float | None
    tasks_processed: int | None = None  # not observable from outside the worker without a broker round-trip


@dataclass
class WorkersSection:
    pattern: str
    limit_bytes: int | None
    uss_requested: bool
    processes: list[WorkerProcess] = field(default_factory=list)
    total_rss_bytes: int = 0
    total_percent: float | None = None
    error: str | None = None


def _own_lineage() -> set[int]:
    """This process and its ancestors: the shell or pytest that launched ``memguard`` may match the pattern."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def find_processes(pattern: re.Pattern[str] | None = None, pids: Iterable[int] = ()) -> list[FoundProcess]:
    """The processes to describe: each root (a given pid, or a matching process whose parent does not match)
    followed by all its descendants as children. Roots are in pid order, so output is stable between runs.

    A pid that does not exist is skipped; the caller decides whether that is an error.
    """
    roots: list[psutil.Process] = []
    excluded = set()
    pid_list = list(pids)
    if pid_list:
        for pid in sorted(set(pid_list)):
            try:
                roots.append(psutil.Process(pid))
            except psutil.Error:
                continue
    else:
        if pattern is None:
            pattern = re.compile(DEFAULT_PATTERN)
        excluded = _own_lineage()
        matched: dict[int, tuple[psutil.Process, int | None]] = {}
        for proc in psutil.process_iter(["ppid", "cmdline"]):
            if proc.pid in excluded:
                continue
            cmdline = " ".join(proc.info.get("cmdline") or ())
            if cmdline and pattern.search(cmdline):
                matched[proc.pid] = (proc, proc.info.get("ppid"))
        roots = [proc for pid, (proc, ppid) in sorted(matched.items()) if ppid not in matched]
    found: list[FoundProcess] = []
    seen: set[int] = set()
    for root in roots:
        if root.pid in seen:
            continue
        seen.add(root.pid)
        found.append(FoundProcess(root, "main", root.pid))
        try:
            descendants = sorted(root.children(recursive=True), key=lambda p: p.pid)
        except psutil.Error:
            descendants = []
        for child in descendants:
            if child.pid not in seen and child.pid not in excluded:
                seen.add(child.pid)
                found.append(FoundProcess(child, "child", root.pid))
    return found


def describe(
    found: FoundProcess, *, uss: bool, limit_bytes: int | None, now: float | None = None
) -> WorkerProcess | None:
    """Read one process's figures, or ``None`` if it exited meanwhile.

    USS costs ~0.1–1 ms per process (it walks ``smaps_rollup``) and may need privileges, hence only on request.
    """
    proc = found.process
    now = time.time() if now is None else now
    try:
        with proc.oneshot():
            rss = int(proc.memory_info().rss)
            name = proc.name()
            cmdline = redact_secrets(" ".join(proc.cmdline()))  # e.g. -b redis://:secret@host: never kept
            ppid = proc.ppid()
            created = proc.create_time()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        rss, name, cmdline, ppid, created = None, "?", "", None, None
    uss_bytes = None
    if uss:
        try:
            uss_bytes = int(proc.memory_full_info().uss)
        except (psutil.Error, AttributeError):
            uss_bytes = None
    return WorkerProcess(
        pid=proc.pid,
        ppid=ppid,
        main_pid=found.main_pid,
        role=found.role,
        name=name,
        cmdline=cmdline,
        rss_bytes=rss,
        uss_bytes=uss_bytes,
        percent_of_limit=percent_of(rss, limit_bytes),
        age_s=round(now - created, 1) if created is not None else None,
    )


def collect_workers(pattern: re.Pattern[str], *, uss: bool, limit_bytes: int | None) -> WorkersSection:
    """Every process of every worker matching ``pattern``, with totals against ``limit_bytes``."""
    section = WorkersSection(pattern=pattern.pattern, limit_bytes=limit_bytes, uss_requested=uss)
    try:
        found = find_processes(pattern)
    except psutil.Error as exc:  # /proc unreadable: say so in the section, keep the rest of the report
        section.error = f"cannot list processes: {exc}"
        return section
    now = time.time()
    for item in found:
        described = describe(item, uss=uss, limit_bytes=limit_bytes, now=now)
        if described is not None:
            section.processes.append(described)
    section.total_rss_bytes = sum(p.rss_bytes or 0 for p in section.processes)
    section.total_percent = percent_of(section.total_rss_bytes, limit_bytes)
    return section
