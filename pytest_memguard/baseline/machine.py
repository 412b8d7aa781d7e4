"""Where a baseline was measured: machine profile and git commit, and the warning when profiles differ.

Why: memory figures depend on the machine (allocator, page size, Python build, libraries mapped, cgroup limit).
A baseline saved on a developer's 16-core laptop and compared on a 2-core CI runner will show "regressions" that
are the machine's doing; the gate still runs but says so in one line. The hostname is recorded for people, never
compared (CI runners get new names every run).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Mapping

from ..runtime.cgroup import current_cgroup_memory, host_total_bytes
from ..runtime.units import MB

# Keys compared between two profiles, and how: exact, or relative difference above which RAM counts as different.
_EXACT_KEYS = ("implementation", "arch", "cpu_count", "cgroup_limit_mb")
_RAM_TOLERANCE = 0.10  # a host's MemTotal wobbles by a few MB across kernels; 10 % is "another machine"
_GIT_TIMEOUT_S = 2.0


def machine_info() -> dict:
    """The profile of this machine, as stored in a baseline's ``machine`` object. Never raises."""
    total = host_total_bytes()
    try:
        cgroup = current_cgroup_memory()
    except Exception:
        cgroup = None
    limit = cgroup.limit_bytes if cgroup is not None else None
    if limit is not None and total is not None and limit >= total:
        limit = None  # a cgroup limit above the host's RAM limits nothing
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "total_ram_mb": round(total / MB, 1) if total else None,
        "cgroup_limit_mb": round(limit / MB, 1) if limit else None,
        "hostname": hostname,
    }


def commit_info(cwd: str | os.PathLike | None = None, *, timeout: float = _GIT_TIMEOUT_S) -> dict | None:
    """``{"id": sha, "dirty": bool}`` of the git checkout at ``cwd``; ``None`` without git or outside a checkout.

    A subprocess with a timeout, because a hung git (network filesystem, credential prompt) must not hang a
    test session.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if not sha:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"id": sha.strip(), "dirty": bool(status.strip()) if status is not None else None}


def _python_minor(version: object) -> str | None:
    if not isinstance(version, str):
        return None
    return ".".join(version.split(".")[:2])


def machine_differences(old: Mapping, new: Mapping) -> list[str]:
    """The differences that matter for memory figures, each as ``"key old != new"``; unknown values are skipped.

    Python is compared by minor version (3.11.4 and 3.11.9 allocate alike), RAM with a 10 % margin.
    """
    diffs: list[str] = []
    old_py, new_py = _python_minor(old.get("python")), _python_minor(new.get("python"))
    if old_py and new_py and old_py != new_py:
        diffs.append(f"python {old_py} != {new_py}")
    for key in _EXACT_KEYS:
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and a != b:
            diffs.append(f"{key} {a} != {b}")
    a, b = old.get("total_ram_mb"), new.get("total_ram_mb")
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float)) and max(a, b) > 0
    if numbers and abs(a - b) / max(a, b) > _RAM_TOLERANCE:
        diffs.append(f"total RAM {a:.0f}MB != {b:.0f}MB")
    return diffs


def machine_warning(old: Mapping, new: Mapping, *, source: str | None = None) -> str | None:
    """One line for the report when ``old`` (the baseline's profile) differs from ``new``; else ``None``."""
    diffs = machine_differences(old, new)
    if not diffs:
        return None
    where = f" ({source})" if source else ""
    return f"baseline{where} recorded on a different machine: {', '.join(diffs)}; figures may differ for that reason"
