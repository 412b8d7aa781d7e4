"""Container (cgroup v1 and v2) memory figures.

Why: inside a container the limit that kills a worker is the cgroup's ``memory.max`` (v2) or
``memory.limit_in_bytes`` (v1), not the host's RAM. ``Process%`` measured against the host makes a worker that is
about to be OOM-killed look idle. This module finds the process's memory cgroup and reads its limit, usage, peak
and OOM-kill count; :func:`effective_limit_bytes` folds in the host RAM and every ancestor's limit.

Every reader takes explicit paths so tests can point it at a folder laid out like cgroupfs, for limits this
machine cannot set. Nothing here raises for a missing or unreadable file: the figure is ``None`` (unknown).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

# Values at or above this are "no limit" (v1 reports PAGE_COUNTER_MAX rounded to pages, ~9.2e18).
_UNLIMITED_FLOOR = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """What the kernel says about the memory cgroup a process lives in; ``None`` means unknown or unlimited."""

    version: int  # 1 or 2
    path: str  # the cgroup directory that was read
    limit_bytes: int | None  # None: no limit set here or above
    current_bytes: int | None
    peak_bytes: int | None  # v2 memory.peak, v1 memory.max_usage_in_bytes
    oom_kill: int | None  # OOM kills in this cgroup so far
    swap_limit_bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED_FLOOR else value


def _read_keyed(path: Path, key: str) -> int | None:
    """Read ``key value`` lines (memory.events, memory.oom_control) and return the value of ``key``."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """Return (v2 path, v1 memory path) from the text of ``/proc/<pid>/cgroup``."""
    v2_path = v1_path = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """Return (fstype, root, mount point, super options) for every cgroup/cgroup2 mount in ``mountinfo`` text."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 1:
            continue
        fstype = rfields[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        super_opts = rfields[2] if len(rfields) > 2 else ""
        mounts.append((fstype, fields[3], fields[4], super_opts))
    return mounts


def _join_under_mount(mount_point: str, mount_root: str, cgroup_path: str) -> Path | None:
    """Map a cgroup path onto its mount; a cgroup namespace mounts its own root, so both cases are handled."""
    if mount_root in ("/", "") or cgroup_path.startswith(mount_root):
        relative = cgroup_path[len(mount_root) :] if mount_root not in ("/", "") else cgroup_path
        candidate = Path(mount_point) / relative.lstrip("/")
        if candidate.is_dir():
            return candidate
    # In a container whose /proc/self/cgroup shows the host path but whose mount is the namespace root.
    if Path(mount_point).is_dir():
        return Path(mount_point)
    return None


def find_memory_cgroup(proc_cgroup: str | None = None, mountinfo: str | None = None) -> tuple[int, Path] | None:
    """Locate this process's memory cgroup directory as (version, path), or ``None`` when there is none.

    v1's memory controller wins when both are mounted (hybrid hosts account memory in v1).
    """
    try:
        if proc_cgroup is None:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    v2_path, v1_path = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    if v1_path is not None:
        for fstype, root, point, opts in mounts:
            if fstype == "cgroup" and "memory" in opts.split(","):
                found = _join_under_mount(point, root, v1_path)
                if found is not None:
                    return 1, found
    if v2_path is not None:
        for fstype, root, point, _opts in mounts:
            if fstype == "cgroup2":
                found = _join_under_mount(point, root, v2_path)
                if found is not None and (found / "memory.current").exists():
                    return 2, found
    return None


# The same figures under each version's file names (v1's oom_kill is a line of memory.oom_control).
_FILE_NAMES = {
    2: {
        "limit": "memory.max",
        "current": "memory.current",
        "peak": "memory.peak",
        "oom_kill": "memory.events",
        "swap": "memory.swap.max",
    },
    1: {
        "limit": "memory.limit_in_bytes",
        "current": "memory.usage_in_bytes",
        "peak": "memory.max_usage_in_bytes",
        "oom_kill": "memory.oom_control",
        "swap": "memory.memsw.limit_in_bytes",
    },
}


def read_cgroup_memory(directory: str | os.PathLike, version: int, *, mount_point: str | None = None) -> CgroupMemory:
    """Read one cgroup directory. The limit is the tightest of this cgroup and its ancestors up to ``mount_point``
    (a parent's limit kills children too)."""
    names = _FILE_NAMES.get(version)
    if names is None:
        raise ValueError(f"cgroup version must be 1 or 2, got {version!r}")
    d = Path(directory)
    limit_name = names["limit"]
    limit = _read_int(d / limit_name)
    current = _read_int(d / names["current"])
    peak = _read_int(d / names["peak"])
    oom_kill = _read_keyed(d / names["oom_kill"], "oom_kill")
    swap = _read_int(d / names["swap"])
    if mount_point:
        stop = Path(mount_point)
        ancestor = d.parent
        while d != stop and (ancestor == stop or stop in ancestor.parents):
            parent_limit = _read_int(ancestor / limit_name)
            if parent_limit is not None and (limit is None or parent_limit < limit):
                limit = parent_limit
            if ancestor == stop:
                break
            ancestor = ancestor.parent
    return CgroupMemory(
        version=version,
        path=str(directory),
        limit_bytes=limit,
        current_bytes=current,
        peak_bytes=peak,
        oom_kill=oom_kill,
        swap_limit_bytes=swap,
    )


_cached_location: tuple[int, Path, str] | None | bool = False


def _mount_point_of(path: Path) -> str:
    # The mount point is the deepest existing ancestor that is a mount; good enough: walk up to /sys/fs/cgroup/<x>.
    parts = path.parts
    for i in range(len(parts), 0, -1):
        candidate = Path(*parts[:i])
        if os.path.ismount(candidate):
            return str(candidate)
    return str(path)


def current_cgroup_memory() -> CgroupMemory | None:
    """This process's cgroup memory figures, or ``None`` outside any memory cgroup (or off Linux).

    The location is found once per process; the figures are read fresh each call (a few file reads).
    """
    global _cached_location
    if _cached_location is False:
        found = find_memory_cgroup()
        _cached_location = None if found is None else (found[0], found[1], _mount_point_of(found[1]))
    if _cached_location is None:
        return None
    version, path, mount = _cached_location  # type: ignore[misc]
    return read_cgroup_memory(path, version, mount_point=mount)


def host_total_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        try:
            import psutil

            return int(psutil.virtual_memory().total)
        except Exception:
            return None


def effective_limit_bytes(cgroup: CgroupMemory | None = None, *, host_total: int | None = None) -> int | None:
    """The memory that can kill this process: min(host RAM, cgroup limit)."""
    if host_total is None:
        host_total = host_total_bytes()
    if cgroup is None:
        cgroup = current_cgroup_memory()
    limit = cgroup.limit_bytes if cgroup is not None else None
    candidates = [v for v in (host_total, limit) if v]
    return min(candidates) if candidates else None


def _reset_location_cache() -> None:
    """Forget the cached cgroup location (after moving between cgroups; used by tests)."""
    global _cached_location
    _cached_location = False
