"""Robust growth per run of a series of retained-memory readings.

Why robust estimators: one run in ten can be disturbed (a cache filling, a lazy import, a GC generation that
happened to hold garbage), and a least-squares slope lets that one run decide. The Theil–Sen slope (median of
all pairwise slopes) and the median of consecutive differences both ignore a minority of odd runs, and need no
distribution assumptions. The *tail* slope (Theil–Sen over the second half) tells steady growth, which continues
to the end, from warm-up growth, which stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True)
class GrowthEstimate:
    """Growth of ``samples`` (bytes, one reading per run after a baseline reading), per run."""

    slope: float  # Theil–Sen slope over all samples, bytes/run
    median_diff: float  # median of consecutive differences, bytes/run
    tail_slope: float  # Theil–Sen slope over the second half, bytes/run
    positive_fraction: float  # share of consecutive differences > 0
    runs: int  # number of consecutive differences (measured runs)
    total: float  # last reading minus first

    @property
    def kb_per_run(self) -> float:
        return self.slope / 1024.0


def theil_sen(samples: Sequence[float]) -> float:
    """Median of the slopes between every pair of points (x = run index). 0.0 for fewer than two samples."""
    n = len(samples)
    if n < 2:
        return 0.0
    slopes = [(samples[j] - samples[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    return float(median(slopes))


def growth_per_run(samples: Sequence[float]) -> GrowthEstimate:
    """Estimate growth per run; ``samples[0]`` is the reading before the first measured run."""
    values = [float(v) for v in samples]
    diffs = [values[i + 1] - values[i] for i in range(len(values) - 1)]
    if not diffs:
        return GrowthEstimate(0.0, 0.0, 0.0, 0.0, 0, 0.0)
    tail = values[len(values) // 2 :]
    return GrowthEstimate(
        slope=theil_sen(values),
        median_diff=float(median(diffs)),
        tail_slope=theil_sen(tail),
        positive_fraction=sum(d > 0 for d in diffs) / len(diffs),
        runs=len(diffs),
        total=values[-1] - values[0],
    )
