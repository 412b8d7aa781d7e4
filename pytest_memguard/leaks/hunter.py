"""``LeakHunter``: run a callable WARMUP times unmeasured, then RUNS times measured, and say whether it leaks.

The model is CPython's ``regrtest -R warmup:runs`` without a debug build: after each measured run the hunter
collects garbage and reads the *retained* traced heap (tracemalloc's current size) and RSS, then judges each
series with :func:`~.verdict.judge`. Any callable works: a test's call phase with fresh fixtures, a Celery task
run eagerly (``lambda: task.apply(args=...)``), plain library code.

tracemalloc is (re)started right after the warm-up with ``frames`` frames, so the hunt traces only what the
measured runs allocate: the site report compares what grew, not the whole heap (see :mod:`.sites`), and the
warm-up's caches are not even traced. Consequences, by design: traces of blocks allocated before the hunt are
dropped (tracing resumes afterwards with the previous frame count if it was on); do not hunt inside a
``MemoryMonitor`` that traces the heap — its heap figures would be meaningless.

The hunter's own bookkeeping (readings, site table) is itself traced; the heap it adds is measured around each
bookkeeping step and subtracted, so the hunter never reports itself.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime.probes import get_probe
from .object_types import TypeGrowth, type_growth
from .sites import Site, SiteTracker, exclude_paths
from .verdict import Verdict, judge

DEFAULT_WARMUP = 3
DEFAULT_RUNS = 10
ProgressFn = Callable[[str, int, int], None]


class HuntSpecError(ValueError):
    """A ``--hunt-leaks`` value that cannot be read."""


def parse_hunt_spec(spec: str | None) -> tuple[int, int]:
    """``"3:10"`` → ``(3, 10)``; ``None``/``""`` → the defaults; one-line :class:`HuntSpecError` otherwise."""
    if spec is None or not str(spec).strip():
        return DEFAULT_WARMUP, DEFAULT_RUNS
    text = str(spec).strip()
    warmup, sep, runs = text.partition(":")
    try:
        w, r = (int(warmup), int(runs)) if sep else (DEFAULT_WARMUP, int(warmup))
    except ValueError:
        raise HuntSpecError(
            f"--hunt-leaks: cannot read {text!r}; write WARMUP:RUNS such as 3:10 (or just RUNS)"
        ) from None
    if w < 0 or r < 3:
        raise HuntSpecError(f"--hunt-leaks: {text!r} needs WARMUP >= 0 and RUNS >= 3 (growth needs 3 runs to judge)")
    return w, r


@dataclass
class HuntResult:
    """Everything one hunt found; :meth:`render` gives the report lines."""

    heap: Verdict | None
    rss: Verdict | None
    sites: list[Site] = field(default_factory=list)
    types: list[TypeGrowth] = field(default_factory=list)
    heap_samples: list[int] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    warmup: int = 0
    runs: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def leaking(self) -> bool:
        return any(v is not None and v.leaking for v in (self.heap, self.rss))

    @property
    def verdict(self) -> Verdict:
        """The headline verdict: the heap's, unless only RSS leaks (a C-level leak tracemalloc cannot see)."""
        if self.heap is not None and (self.heap.leaking or self.rss is None or not self.rss.leaking):
            return self.heap
        assert self.rss is not None
        return self.rss

    @property
    def kb_per_run(self) -> float:
        return self.verdict.kb_per_run

    def check_limit(self, max_kb_per_run: float) -> Verdict:
        """The verdict with ``max_kb_per_run`` as the floor, for ``@pytest.mark.max_leak_kb``: leaking = fail."""
        if self.heap_samples:
            return judge(self.heap_samples, "heap", floor_kb=max_kb_per_run)
        return judge(self.rss_samples, "rss", floor_kb=max_kb_per_run)

    def render(self, *, verbose: bool = False) -> str:
        lines = [self.verdict.render(self.sites)]
        if self.leaking or verbose:
            other = self.rss if self.verdict is self.heap else self.heap
            if other is not None and (other.leaking or verbose):
                lines.append("  " + other.render())
            if self.sites:
                lines.append("  allocation sites that grew in (nearly) every run:")
                lines += ["    " + line for site in self.sites for line in site.render().splitlines()]
            if self.types:
                lines.append("  object types whose count grew every run:")
                lines += [f"    {t.render()}" for t in self.types]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        def verdict(v: Verdict | None) -> dict | None:
            if v is None:
                return None
            return {"leaking": v.leaking, "kb_per_run": round(v.kb_per_run, 3), "runs": v.runs, "reason": v.reason}

        return {
            "leaking": self.leaking,
            "warmup": self.warmup,
            "runs": self.runs,
            "heap": verdict(self.heap),
            "rss": verdict(self.rss),
            "sites": [s.as_dict() for s in self.sites],
            "types": [t.as_dict() for t in self.types],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class LeakHunter:
    """Configure once, :meth:`hunt` many callables.

    ``types``: ``"on_leak"`` (default) counts object types with pympler only for a hunt judged leaking, in
    ``type_runs`` extra runs; ``True`` always; ``False`` never. ``progress(phase, done, total)`` is called after
    every run (phases ``"warmup"``, ``"run"``, ``"types"``) for progress lines or bars.
    """

    def __init__(
        self,
        warmup: int = DEFAULT_WARMUP,
        runs: int = DEFAULT_RUNS,
        *,
        frames: int = 4,
        top: int = 5,
        site_fraction: float = 0.8,
        sites: bool = True,
        heap: bool = True,
        rss: bool = True,
        types: bool | str = "on_leak",
        type_runs: int = 3,
        exclude: Sequence[str] = (),
        progress: ProgressFn | None = None,
    ) -> None:
        if runs < 3:
            raise ValueError(f"runs must be >= 3 to judge growth, got {runs}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup, self.runs, self.frames, self.top = warmup, runs, frames, top
        self.site_fraction = site_fraction
        self.track_sites, self.track_heap, self.track_rss = sites, heap, rss
        self.types, self.type_runs = types, type_runs
        self.exclude = exclude_paths(exclude)
        self.progress = progress

    def _tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def hunt(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> HuntResult:
        """Hunt ``func(*args, **kwargs)``; exceptions from ``func`` propagate (tracemalloc is restored first)."""
        for i in range(self.warmup):
            func(*args, **kwargs)
            self._tick("warmup", i + 1, self.warmup)
        tracing = self.track_heap or self.track_sites
        was_tracing = tracemalloc.is_tracing()
        old_frames = tracemalloc.get_traceback_limit() if was_tracing else None
        probe = get_probe()
        heap_samples: list[int] = []
        rss_samples: list[int] = []
        tracker = SiteTracker(exclude=self.exclude) if self.track_sites else None
        own = 0  # heap retained by our own bookkeeping, subtracted from every reading
        site_seconds = restart_seconds = 0.0
        t_start = time.perf_counter()
        try:
            gc.collect()
            if tracing:
                t0 = time.perf_counter()
                if was_tracing:
                    tracemalloc.stop()
                tracemalloc.start(self.frames)
                restart_seconds = time.perf_counter() - t0
            for run in range(self.runs + 1):  # run 0 is the baseline reading before the first measured run
                if run:
                    func(*args, **kwargs)
                gc.collect()
                heap_now = tracemalloc.get_traced_memory()[0] if tracing else 0
                gc.disable()  # nothing of the workload may be freed inside the bookkeeping window
                try:
                    # Everything from here to window_end is ours. The variables above and below are rebound
                    # every run, so the few objects they hold are a constant, not growth.
                    window_start = tracemalloc.get_traced_memory()[0] if tracing else 0
                    t0 = time.perf_counter()
                    rss_now = probe.rss_bytes() if self.track_rss else None
                    if self.track_heap:
                        heap_samples.append(heap_now - own)
                    if rss_now is not None:
                        rss_samples.append(rss_now)
                    if tracker is not None:
                        tracker.observe()
                    site_seconds += time.perf_counter() - t0
                    if tracing:
                        # A full collection empties the interpreter's free lists: what we freed into them is
                        # then freed in this window, not at the next reading where it would look like the
                        # workload shrinking.
                        gc.collect()
                        window_end = tracemalloc.get_traced_memory()[0]
                        own += window_end - window_start
                finally:
                    gc.enable()
                if run:
                    self._tick("run", run, self.runs)
        finally:
            if tracing:
                tracemalloc.stop()
                if was_tracing:
                    tracemalloc.start(old_frames or 1)
        t_sites = time.perf_counter()
        found = tracker.sites(min_fraction=self.site_fraction, top=self.top) if tracker is not None else []
        site_seconds += time.perf_counter() - t_sites
        result = HuntResult(
            heap=judge(heap_samples, "heap") if self.track_heap else None,
            rss=judge(rss_samples, "rss") if rss_samples else None,
            sites=found,
            heap_samples=heap_samples,
            rss_samples=rss_samples,
            warmup=self.warmup,
            runs=self.runs,
            # sites_s: every site observation plus the report; restart_s: dropping the old traces.
            timings={"hunt_s": time.perf_counter() - t_start, "sites_s": site_seconds, "restart_s": restart_seconds},
        )
        if self.types is True or (self.types == "on_leak" and result.leaking):
            t0 = time.perf_counter()
            result.types = type_growth(func, *args, runs=self.type_runs, top=self.top, **kwargs)
            result.timings["types_s"] = time.perf_counter() - t0
            self._tick("types", self.type_runs, self.type_runs)
        return result


def hunt(func: Callable[..., Any], *args: Any, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, **kwargs: Any):
    """Shortcut: ``LeakHunter(warmup, runs).hunt(func, *args, **kwargs)`` with default settings."""
    return LeakHunter(warmup, runs).hunt(func, *args, **kwargs)
