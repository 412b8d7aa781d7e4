"""Noise control for ``--memory-repeat=N``: which of N measurements of the same work to keep.

The policy, in one place: keep the run with the *smallest peak*, whole (its delta and RSS too, so the three
figures describe one real run). Noise only ever adds memory — another thread's allocation, a GC that ran late,
an allocator arena not yet reused — so the minimum is the closest to what the code itself needs, as timing
benchmarks keep the fastest run. Runs whose peak is unknown are used only when no run has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .format import Entry

T = TypeVar("T")


def _peak(item: Any) -> float | None:
    if isinstance(item, Entry):
        return item.peak_mb
    if isinstance(item, dict):
        return item.get("peak_delta_mb", item.get("peak_mb"))
    return getattr(item, "peak_delta_mb", None)


def min_peak(measurements: Sequence[T]) -> T:
    """The measurement with the smallest peak above start (``Measurement``, its dict, or :class:`Entry`)."""
    if not measurements:
        raise ValueError("min_peak() needs at least one measurement")
    known = [m for m in measurements if _peak(m) is not None]
    if not known:
        return measurements[0]
    return min(known, key=lambda m: _peak(m))  # type: ignore[arg-type, return-value]


def keep_min_peak(entries: Sequence[Entry]) -> Entry:
    """Combine repeated entries of one name into one, recording how many runs it was chosen from."""
    best = min_peak(entries)
    return Entry(best.peak_mb, best.delta_mb, best.rss_mb, kind=best.kind, runs=len(entries))
