"""Where the memory went: tracemalloc allocation sites that grew during a test's call phase.

Cost is the whole design. A naive ``snapshot.compare_to(old, "lineno")`` took 1.3 s at 300 k traced blocks
(``MEASUREMENTS.md``), and tracemalloc itself slows allocation-heavy code 8× at one frame. So:

- tracing starts at the start of the call phase (when nobody else traces), so every trace alive at the end *was
  allocated by the test*: the end snapshot already is "what grew" and needs no comparison at all;
- when tracemalloc was already running (``-X tracemalloc``, another tool), a start snapshot is taken and only sites
  whose size grew are kept — one linear pass each, no ``compare_to``;
- peaks are freed by the time a test returns, so a watcher thread (a 2 µs ``get_traced_memory()`` every 5 ms)
  takes a snapshot only once the traced heap has grown by half the test's peak budget, and again at each further
  25 %: green tests far from their budget never pay for a snapshot;
- frames of pytest, pluggy, tracemalloc and this plugin are dropped from every stack; traces allocated by the plugin
  itself are skipped.

tracemalloc sees the Python heap only (and libraries that report to it, e.g. numpy); ``mmap`` and plain C
``malloc`` are invisible to it, which the rendering says when the traced heap is far below the RSS figures.
"""

from __future__ import annotations

import os
import sysconfig
import threading
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass, field

import _pytest
import pluggy
import pytest

from ..runtime.units import MB, format_bytes

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HARNESS_DIRS = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep for module in (_pytest, pluggy)) + (
    _PACKAGE_DIR + os.sep,
)
_HARNESS_FILES = {os.path.abspath(pytest.__file__), tracemalloc.__file__}
_STDLIB_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")})
_LIBRARY_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("purelib", "platlib")})

STACK_DEPTH = 3  # frames shown under each site
MIN_SITE_BYTES = 1024  # smaller sites are noise next to budgets in MB (and include harness work the frame limit hid)


def _short(filename: str, lineno: int) -> str:
    try:
        rel = os.path.relpath(filename)
        if not rel.startswith(".." + os.sep):
            filename = rel
    except ValueError:
        pass
    return f"{filename}:{lineno}"


@dataclass
class Site:
    """One allocation site (the innermost frame not pytest's or ours) and what it added; frames are raw
    ``(filename, lineno)`` tuples, turned into text only when rendered (for the few sites shown)."""

    frame: tuple[str, int]
    size: int = 0
    count: int = 0
    stack: tuple[tuple[str, int], ...] = ()
    _stack_sizes: dict[tuple, int] = field(default_factory=dict, repr=False)

    @property
    def location(self) -> str:
        return _short(*self.frame)

    def add(self, size: int, count: int, stack: tuple[tuple[str, int], ...]) -> None:
        self.size += size
        self.count += count
        total = self._stack_sizes.get(stack, 0) + size
        self._stack_sizes[stack] = total
        if not self.stack or total > self._stack_sizes.get(self.stack, 0):
            self.stack = stack

    def render(self) -> str:
        head = f"  {format_bytes(self.size):>10} in {self.count:>7,} blocks  {self.location}"
        lines = [head] + [f"{'':>34}called from {_short(*frame)}" for frame in self.stack[1:]]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "location": self.location,
            "size": self.size,
            "count": self.count,
            "stack": [_short(*frame) for frame in self.stack],
        }


@dataclass
class SiteReport:
    """The top sites of one snapshot, with its title and the traced heap size for context."""

    title: str
    sites: list[Site]
    traced_bytes: int
    note: str = ""

    def render(self, limit: int) -> str:
        shown = self.sites[:limit]
        lines = [f"{self.title} (traced Python heap {format_bytes(self.traced_bytes)}):"]
        if not shown:
            lines.append("  (no allocation site outside pytest/memguard grew by 1 KB or more)")
        lines.extend(site.render() for site in shown)
        if len(self.sites) > limit:
            lines.append(f"  ... {len(self.sites) - limit} more site(s); -v shows more")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    def as_dict(self, limit: int) -> dict:
        return {
            "title": self.title,
            "traced_bytes": self.traced_bytes,
            "sites": [s.as_dict() for s in self.sites[:limit]],
        }


_USER, _STDLIB, _HARNESS = 0, 1, 2


class _FrameClassifier:
    """Per file (cached): user code, the standard library, or the harness (pytest, pluggy, this plugin)."""

    def __init__(self) -> None:
        self._kinds: dict[str, int] = {}

    def kind(self, filename: str) -> int:
        kind = self._kinds.get(filename)
        if kind is None:
            if filename in _HARNESS_FILES or filename.startswith(_HARNESS_DIRS):
                kind = _HARNESS
            elif filename.startswith(_LIBRARY_DIRS):  # third-party code the test called (inside the stdlib dir)
                kind = _USER
            elif filename.startswith("<") or filename.startswith(_STDLIB_DIRS):
                kind = _STDLIB
            else:
                kind = _USER
            self._kinds[filename] = kind
        return kind


def _raw_traces(snapshot: tracemalloc.Snapshot) -> Iterable[tuple]:
    return snapshot.traces._traces  # raw (domain, size, frames most-recent-first, nframe): no object per trace


def group_sites(snapshot: tracemalloc.Snapshot, baseline: tracemalloc.Snapshot | None = None) -> list[Site]:
    """Sites of ``snapshot`` by size, biggest first; with ``baseline``, only what each site grew since it.

    Walking a stack from the allocation outwards, the first frame outside the standard library decides: user code
    keeps the trace, pytest/pluggy/memguard drop it (the harness allocated it, not the test). A stack of only
    standard-library frames (truncated by the frame limit) is kept. Harness frames are dropped from shown stacks.
    """
    classify = _FrameClassifier().kind
    sites: dict[tuple[str, int], Site] = {}

    def accumulate(traces: Iterable[tuple], sign: int) -> None:
        # One cheap pass sums equal stacks (a loop allocating 60 k blocks has one stack); frames are then looked
        # at once per distinct stack, not once per block.
        totals: dict[tuple, list[int]] = {}
        for _domain, size, frames, nframe in traces:
            total = totals.get(frames)
            if total is None:
                totals[frames] = [size, 1, nframe > len(frames)]
            else:
                total[0] += size
                total[1] += 1
        for frames, (size, count, truncated) in totals.items():
            if not frames:
                continue
            keep = truncated  # only stdlib frames: keep if the frame limit may have cut the user code off
            for name, _ in frames:
                kind = classify(name)
                if kind != _STDLIB:
                    keep = kind == _USER  # the first frame outside the stdlib decides: test's or harness's
                    break
            if not keep:
                continue
            stack = tuple(f for f in frames if classify(f[0]) != _HARNESS)[:STACK_DEPTH]
            site = sites.get(stack[0])
            if site is None:
                site = sites[stack[0]] = Site(stack[0])
            site.add(sign * size, sign * count, stack)

    accumulate(_raw_traces(snapshot), 1)
    if baseline is not None:
        accumulate(_raw_traces(baseline), -1)
    grown = [site for site in sites.values() if site.size >= MIN_SITE_BYTES]
    grown.sort(key=lambda site: site.size, reverse=True)
    return grown


class CallTracer:
    """tracemalloc around one call phase; :meth:`reports` gives the sites at the end and near the peak.

    ``peak_budget_bytes``: the test's peak budget; the watcher takes its first peak snapshot once the traced heap
    grew by half of it (``None`` disables peak snapshots).
    """

    POLL_S = 0.005
    STEP = 1.25

    def __init__(self, frames: int, *, peak_budget_bytes: int | None = None) -> None:
        self.frames = max(1, int(frames))
        self.peak_budget_bytes = peak_budget_bytes
        self.owned = False
        self._baseline: tracemalloc.Snapshot | None = None
        self._start_traced = 0
        self._peak_snapshot: tracemalloc.Snapshot | None = None
        self._peak_snapshot_traced = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CallTracer:
        if tracemalloc.is_tracing():
            self._baseline = tracemalloc.take_snapshot()
        else:
            tracemalloc.start(self.frames)
            self.owned = True
        self._start_traced = tracemalloc.get_traced_memory()[0]
        if self.peak_budget_bytes is not None:
            self._thread = threading.Thread(target=self._watch, name="memguard-peak-watch", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        threshold = self._start_traced + max((self.peak_budget_bytes or 0) // 2, MB)
        while not self._stop.wait(self.POLL_S):
            if not tracemalloc.is_tracing():
                return
            current = tracemalloc.get_traced_memory()[0]
            if current >= threshold:
                self._peak_snapshot = tracemalloc.take_snapshot()
                self._peak_snapshot_traced = current
                threshold = int(current * self.STEP)

    def _stop_watch(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reports(self) -> list[SiteReport]:
        """Snapshot now (the end of the call), stop tracing, and group the sites (untraced: grouping allocates)."""
        self._stop_watch()
        if not tracemalloc.is_tracing():
            return []
        current, peak = tracemalloc.get_traced_memory()
        end = tracemalloc.take_snapshot()
        peak_snapshot, baseline = self._peak_snapshot, self._baseline
        self.stop()
        title = "allocation sites still holding memory at the end of the call"
        reports = [SiteReport(title, group_sites(end, baseline), current)]
        if peak_snapshot is not None:
            title = "allocation sites holding memory near the peak"
            reports.insert(0, SiteReport(title, group_sites(peak_snapshot, baseline), self._peak_snapshot_traced))
        grown_peak = peak - self._start_traced
        if self.peak_budget_bytes is not None and grown_peak < self.peak_budget_bytes:
            reports[-1].note = (
                f"the traced Python heap grew at most {format_bytes(max(grown_peak, 0))} during the call; memory "
                "beyond that is outside the Python heap (C extensions, mmap, child processes)"
            )
        return reports

    def stop(self) -> None:
        self._stop_watch()
        self._peak_snapshot = self._baseline = None
        if self.owned and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.owned = False
