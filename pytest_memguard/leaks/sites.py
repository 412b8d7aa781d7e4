"""Allocation sites whose traced size grew in (nearly) every run — cheaply, by comparing only what grew.

The naive way, ``snapshot.compare_to(previous, "lineno")``, wraps every one of the heap's traces in Python
objects and groups them twice per run: 1.1–1.3 s at 300 k traced blocks. Two things make this module cheap:

1. :class:`~.hunter.LeakHunter` restarts tracemalloc after the warm-up, so the traces read here are only the
   blocks allocated *since the hunt began* and still alive — what a leak adds — not the whole heap. (A block
   allocated before and reallocated since, like a leaking list's item array, is traced again from its realloc.)
2. Each observation groups the raw trace tuples by their traceback (tracemalloc hands out one shared tuple per
   distinct traceback, so the dict stays as small as the number of sites) and only keys whose size differs from
   the previous observation are touched. State per site is a few integers; no snapshot is kept.

Frames from this package and from ``tracemalloc`` itself are left out: the hunter's own bookkeeping grows too.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass, field

Frame = tuple[str, int]
Stack = tuple[Frame, ...]  # most recent call first, as tracemalloc stores it

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))
# Our own directory, tracemalloc, and the runtime's probes (the RSS readings the hunter keeps are allocated there).
_DEFAULT_EXCLUDE = (
    _OWN_DIR,
    os.path.abspath(tracemalloc.__file__),
    os.path.join(os.path.dirname(_OWN_DIR), "runtime", "probes.py"),
)


def _raw_traces() -> list[tuple]:
    """``(domain, size, frames, ...)`` tuples of every traced block.

    ``tracemalloc._get_traces`` is what ``take_snapshot`` calls; using it skips building a Snapshot. Should it go
    away, the public API gives the same data, slower.
    """
    getter = getattr(tracemalloc, "_get_traces", None)
    if getter is not None:
        return getter()
    snapshot = tracemalloc.take_snapshot()  # pragma: no cover - CPython has _get_traces since 3.4
    return [  # pragma: no cover
        (t.domain, t.size, tuple((f.filename, f.lineno) for f in reversed(t.traceback))) for t in snapshot.traces
    ]


def display_path(filename: str) -> str:
    """``filename`` relative to the working directory when it lies under it (shorter, clickable in CI logs)."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


@dataclass
class _SiteState:
    size: int = 0
    count: int = 0
    first_size: int = 0
    first_count: int = 0
    grew_runs: int = 0


@dataclass(frozen=True)
class Site:
    """One allocation stack that kept growing."""

    stack: Stack  # most recent first; stack[0] is the allocating line
    grew_runs: int
    runs: int
    size_growth: int  # bytes added over the measured runs
    count_growth: int  # blocks added

    @property
    def filename(self) -> str:
        return self.stack[0][0]

    @property
    def lineno(self) -> int:
        return self.stack[0][1]

    @property
    def location(self) -> str:
        return f"{display_path(self.filename)}:{self.lineno}"

    @property
    def kb_per_run(self) -> float:
        return self.size_growth / 1024.0 / max(self.runs, 1)

    def short(self) -> str:
        return f"{self.location} (+{self.kb_per_run:.1f} KB/run)"

    def render(self) -> str:
        """``path:line +10.0 KB/run (+10 blocks/run, grew in 10/10 runs)`` and the callers, one per line."""
        blocks = self.count_growth / max(self.runs, 1)
        lines = [
            f"{self.location} +{self.kb_per_run:.1f} KB/run "
            f"({blocks:+.1f} blocks/run, grew in {self.grew_runs}/{self.runs} runs)"
        ]
        lines += [f"    called from {display_path(f)}:{n}" for f, n in self.stack[1:]]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "location": self.location,
            "stack": [f"{display_path(f)}:{n}" for f, n in self.stack],
            "kb_per_run": round(self.kb_per_run, 3),
            "grew_runs": self.grew_runs,
            "runs": self.runs,
            "size_growth": self.size_growth,
            "count_growth": self.count_growth,
        }


@dataclass
class SiteTracker:
    """Observe the traced heap after each run and keep, per allocation stack, how often it grew.

    Call :meth:`observe` once before the first measured run (the baseline) and once after each run.
    """

    exclude: tuple[str, ...] = _DEFAULT_EXCLUDE
    _prev: dict[Stack, tuple[int, int]] = field(default_factory=dict)
    _states: dict[Stack, _SiteState] = field(default_factory=dict)
    observations: int = 0

    def _group(self) -> dict[Stack, tuple[int, int]]:
        """``{stack: (total size, block count)}`` of the current traces, own frames left out."""
        # Keyed by the frames tuple itself: tracemalloc shares one tuple per distinct traceback, so the dict's
        # equality check is an identity check, and no per-trace key object is allocated.
        sizes: dict[Stack, list] = {}
        for trace in _raw_traces():
            frames = trace[2]
            slot = sizes.get(frames)
            if slot is None:
                sizes[frames] = [frames, trace[1], 1]
            else:
                slot[1] += trace[1]
                slot[2] += 1
        exclude = self.exclude
        return {
            frames: (size, count)
            for frames, size, count in sizes.values()
            if frames and not frames[0][0].startswith(exclude)
        }

    def observe(self) -> None:
        current = self._group()
        prev = self._prev
        baseline = self.observations == 0
        states = self._states
        for stack, (size, count) in current.items():
            before = prev.get(stack)
            if before is not None and before[0] == size:
                continue  # unchanged: the common case, touched no further
            state = states.get(stack)
            if state is None:
                old_size, old_count = before if before is not None else (0, 0)
                state = states[stack] = _SiteState(size=old_size, count=old_count, first_size=old_size)
                state.first_count = old_count
                if baseline:  # present before the first run: its size then is the starting point
                    state.first_size, state.first_count = size, count
            if not baseline and size > state.size:
                state.grew_runs += 1
            state.size, state.count = size, count
        for stack in prev.keys() - current.keys():  # freed entirely
            state = states.get(stack)
            if state is not None:
                state.size = state.count = 0
        self._prev = current
        self.observations += 1

    def _trim(self, stack: Stack) -> Stack:
        """Drop the callers from the hunter onwards: they are the same for every site and say nothing."""
        for i, (filename, _line) in enumerate(stack):
            if i and filename.startswith(self.exclude):
                return stack[:i]
        return stack

    def sites(self, *, min_fraction: float = 0.8, top: int = 5) -> list[Site]:
        """Stacks that grew in at least ``min_fraction`` of the runs, largest growth first, at most ``top``."""
        runs = max(self.observations - 1, 0)
        if runs == 0:
            return []
        needed = max(1, int(min_fraction * runs + 0.999))
        found = [
            Site(self._trim(stack), s.grew_runs, runs, s.size - s.first_size, s.count - s.first_count)
            for stack, s in self._states.items()
            if s.grew_runs >= needed and s.size > s.first_size
        ]
        found.sort(key=lambda site: site.size_growth, reverse=True)
        return found[:top]


def exclude_paths(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The default excluded path prefixes plus ``extra`` (e.g. the plugin's own directory)."""
    return _DEFAULT_EXCLUDE + tuple(os.path.abspath(p) for p in extra)
