"""Leak or not: a verdict on a growth estimate, per metric, with the noise floor each metric needs.

The rule (all must hold, so one-off warm-up growth is never a leak):

* at least :data:`MIN_RUNS` measured runs;
* the Theil–Sen slope over all runs is above the floor;
* the slope over the second half is above the floor (half the floor for RSS, whose steps are coarse) — a cache
  that filled in the first runs has stopped by then;
* for the heap, also the median run-to-run difference is above the floor and most differences
  (:attr:`Policy.min_positive_fraction`) are positive: traced heap is exact to the byte, so a real leak grows every
  run. RSS moves in pages and allocator arenas (a 300 KB/run leak shows as a 1 MB step every third run), so for RSS
  only the slopes and a lower share of positive steps are asked for, against a much larger floor.

Floors: 1 KB/run for the heap (interpreter jitter — freelists, dict resizes — stays well under it) and 256 KB/run
for RSS (a few pages plus arena granularity). ``@pytest.mark.max_leak_kb(n)`` judges with ``floor_kb=n`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .growth import GrowthEstimate, growth_per_run

MIN_RUNS = 3


@dataclass(frozen=True)
class Policy:
    floor_kb: float
    min_positive_fraction: float
    require_median: bool
    tail_factor: float = 1.0


POLICIES: dict[str, Policy] = {
    "heap": Policy(floor_kb=1.0, min_positive_fraction=0.6, require_median=True),
    "rss": Policy(floor_kb=256.0, min_positive_fraction=0.2, require_median=False, tail_factor=0.5),
}


@dataclass(frozen=True)
class Verdict:
    """The judgement of one metric's series."""

    metric: str  # "heap" or "rss"
    runs: int
    kb_per_run: float
    leaking: bool
    floor_kb: float
    reason: str  # why not leaking (empty when leaking)
    estimate: GrowthEstimate

    def render(self, sites: Sequence[object] = (), *, max_sites: int = 3) -> str:
        """``LEAK ~12.3 KB/run over 10 runs (heap), top sites: a.py:3 (+10.0 KB/run), …``; or a no-leak line."""
        if not self.leaking:
            return f"no leak: ~{self.kb_per_run:.1f} KB/run over {self.runs} runs ({self.metric}; {self.reason})"
        text = f"LEAK ~{self.kb_per_run:.1f} KB/run over {self.runs} runs ({self.metric})"
        # One entry per line of code (a line can allocate through several stacks), largest first.
        per_line: dict[str, float] = {}
        for site in sites:
            location = getattr(site, "location", str(site))
            per_line[location] = per_line.get(location, 0.0) + getattr(site, "kb_per_run", 0.0)
        ranked = sorted(per_line.items(), key=lambda item: item[1], reverse=True)[:max_sites]
        shown = [f"{location} (+{kb:.1f} KB/run)" for location, kb in ranked]
        if shown:
            text += ", top sites: " + ", ".join(shown)
        return text


def judge(samples: Sequence[float], metric: str = "heap", *, floor_kb: float | None = None) -> Verdict:
    """Judge a series of retained-memory readings in bytes (``samples[0]`` before the first measured run)."""
    if metric not in POLICIES:
        raise ValueError(f"metric must be one of {', '.join(POLICIES)}, got {metric!r}")
    policy = POLICIES[metric]
    floor = (policy.floor_kb if floor_kb is None else float(floor_kb)) * 1024.0
    est = growth_per_run(samples)
    reason = ""
    if est.runs < MIN_RUNS:
        reason = f"only {est.runs} runs, need {MIN_RUNS}"
    elif est.slope <= floor:
        reason = f"below the {floor / 1024:g} KB/run floor"
    elif est.tail_slope <= floor * policy.tail_factor:
        reason = "growth stopped (warm-up)"
    elif policy.require_median and est.median_diff <= floor:
        reason = "growth not in most runs (warm-up)"
    elif est.positive_fraction < policy.min_positive_fraction:
        reason = f"grew in only {est.positive_fraction:.0%} of runs"
    return Verdict(
        metric=metric,
        runs=est.runs,
        kb_per_run=est.kb_per_run,
        leaking=not reason,
        floor_kb=floor / 1024.0,
        reason=reason,
        estimate=est,
    )
