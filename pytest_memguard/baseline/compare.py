"""Comparing two sets of figures: which changed beyond the tolerance, which are new, which went missing.

Kept apart from rendering (as in pytest-benchmark): the plugin gathers a :class:`Comparison` during the session
and reports it once at the end; ``memguard compare`` prints the same object as text, JSON or markdown.
New and missing names are reported, never failed: a renamed or added test is not a regression.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .format import Entry
from .tolerance import Tolerance

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    """One metric of one name, compared."""

    name: str
    metric: str  # "peak", "delta" or "rss"
    baseline_mb: float
    now_mb: float
    status: str  # REGRESSION, IMPROVEMENT or UNCHANGED
    allowed_mb: float  # the increase the tolerance allowed
    kind: str = "test"

    @property
    def change_mb(self) -> float:
        return self.now_mb - self.baseline_mb

    @property
    def change_pct(self) -> float | None:
        """Relative change in percent; ``None`` when the baseline is 0 (any change is infinitely many %)."""
        if self.baseline_mb == 0:
            return None
        return 100.0 * self.change_mb / abs(self.baseline_mb)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "baseline_mb": round(self.baseline_mb, 3),
            "now_mb": round(self.now_mb, 3),
            "change_mb": round(self.change_mb, 3),
            "change_pct": None if self.change_pct is None else round(self.change_pct, 1),
            "allowed_mb": round(self.allowed_mb, 3),
            "status": self.status,
        }


@dataclass
class Comparison:
    """Everything a report needs: changes by status, new and missing names, the tolerance and warnings."""

    tolerance: Tolerance
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    unchanged: list[Change] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when any figure regressed (the gate's verdict)."""
        return bool(self.regressions)

    def as_dict(self) -> dict:
        return {
            "tolerance": self.tolerance.spec,
            "failed": self.failed,
            "regressions": [c.as_dict() for c in self.regressions],
            "improvements": [c.as_dict() for c in self.improvements],
            "unchanged": [c.as_dict() for c in self.unchanged],
            "new": list(self.new),
            "missing": list(self.missing),
            "warnings": list(self.warnings),
        }


def compare(
    baseline_entries: Mapping[str, Entry],
    current_entries: Mapping[str, Entry],
    tolerance: Tolerance,
    *,
    warnings: list[str] | None = None,
) -> Comparison:
    """Compare ``current_entries`` against ``baseline_entries`` on the metrics ``tolerance`` gates.

    A metric unknown (``None``) on either side is skipped for that name. Regressions are sorted worst first
    (largest increase beyond what was allowed), improvements largest fall first.
    """
    result = Comparison(tolerance=tolerance, warnings=list(warnings or []))
    for name in sorted(current_entries):
        now = current_entries[name]
        base = baseline_entries.get(name)
        if base is None:
            result.new.append(name)
            continue
        for metric in tolerance.metrics:
            rule = tolerance.rules[metric]
            b, n = base.metric(metric), now.metric(metric)
            if b is None or n is None:
                continue
            if rule.regressed(b, n):
                status, bucket = REGRESSION, result.regressions
            elif rule.improved(b, n):
                status, bucket = IMPROVEMENT, result.improvements
            else:
                status, bucket = UNCHANGED, result.unchanged
            bucket.append(Change(name, metric, b, n, status, rule.allowed_mb(b), kind=now.kind))
    result.missing = sorted(set(baseline_entries) - set(current_entries))
    result.regressions.sort(key=lambda c: c.change_mb - c.allowed_mb, reverse=True)
    result.improvements.sort(key=lambda c: c.change_mb)
    return result
