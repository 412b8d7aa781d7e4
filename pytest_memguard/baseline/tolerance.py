"""Regression tolerances: ``--memory-regression`` / ``memguard compare --fail-on`` specs.

Grammar (comma-separated parts, spaces ignored)::

    10%                  every metric: more than 10 % above the baseline
    +5MB                 every metric: more than 5 MB above the baseline (units as in budgets: KB, MB, GiB…)
    10%,+5MB             every metric: more than 10 % AND more than 5 MB above
    peak:10%,delta:+2MB  per metric; metrics not named are not gated
    10%,delta:+2MB       every metric at 10 %, except delta judged by its own rule
    peak:10%,peak:+1MB   parts for the same metric combine (AND)

What a user expects, hence the rule: a figure regressed when it exceeds *every* tolerance given for it,
``now - base > |base| * pct`` **and** ``now - base > abs``; a part not given is 0. So ``10%,+5MB`` on a 2 MB test
ignores a 2 → 2.5 MB wobble (+25 % but only +0.5 MB), and on a 2 GB test ignores +6 MB (+0.3 %): the relative part
protects big figures from noise, the absolute part small ones. A metric with its own rule uses only that rule.

Below :data:`NOISE_FLOOR_MB` (0.1 MB) no change counts, whatever the spec: RSS moves in 4 KB pages and the
allocator in arenas, and the figures are stored to 0.001 MB; a ``10%`` gate on a delta of 0.0 MB would otherwise
fail on a single page. Improvements mirror regressions (a fall beyond the same tolerance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..runtime.units import MB, SizeError, parse_size
from .errors import ToleranceError
from .format import METRICS

NOISE_FLOOR_MB = 0.1

_PCT_RE = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)%$")
_EXAMPLES = "write e.g. '10%', '+5MB', '10%,+5MB' or 'peak:10%,delta:+2MB' (metrics: peak, delta, rss)"


@dataclass(frozen=True)
class Rule:
    """The tolerance of one metric: relative (``pct``, a fraction: 0.10 = 10 %) and absolute (``abs_mb``)."""

    pct: float = 0.0
    abs_mb: float = 0.0
    floor_mb: float = NOISE_FLOOR_MB

    def allowed_mb(self, base: float) -> float:
        """The largest increase over ``base`` that is still not a regression."""
        return max(abs(base) * self.pct, self.abs_mb, self.floor_mb)

    def regressed(self, base: float, now: float) -> bool:
        return now - base > self.allowed_mb(base)

    def improved(self, base: float, now: float) -> bool:
        return base - now > self.allowed_mb(base)

    def describe(self) -> str:
        parts = []
        if self.pct:
            parts.append(f"{self.pct * 100:g}%")
        if self.abs_mb:
            parts.append(f"+{self.abs_mb:g}MB")
        return " and ".join(parts) if parts else f"+{self.floor_mb:g}MB (noise floor)"


@dataclass(frozen=True)
class Tolerance:
    """Which metrics are gated and by which :class:`Rule`."""

    rules: dict[str, Rule] = field(default_factory=dict)
    spec: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m in METRICS if m in self.rules)

    def rule(self, metric: str) -> Rule | None:
        """The rule for ``metric``, or ``None`` when that metric is not gated."""
        return self.rules.get(metric)

    def describe(self) -> str:
        return ", ".join(f"{m} {self.rules[m].describe()}" for m in self.metrics)


def _read_part(text: str, spec: str, what: str) -> tuple[float, float]:
    """One tolerance value: ``(pct, 0)`` or ``(0, abs_mb)``."""
    match = _PCT_RE.match(text)
    if match:
        return float(match.group(1)) / 100.0, 0.0
    if text.endswith("%"):
        raise ToleranceError(f"{what}: cannot read percentage {text!r} in {spec!r}; {_EXAMPLES}")
    if text.startswith("-"):
        raise ToleranceError(
            f"{what}: {text!r} in {spec!r} is negative; a tolerance is an allowed increase, {_EXAMPLES}"
        )
    try:
        return 0.0, parse_size(text.lstrip("+"), "MB", what=what) / MB
    except SizeError:
        raise ToleranceError(f"{what}: cannot read {text!r} in {spec!r}; {_EXAMPLES}") from None


def parse_tolerance(spec: str, *, what: str = "--memory-regression", floor_mb: float = NOISE_FLOOR_MB) -> Tolerance:
    """Read a tolerance spec (see the module docstring); :class:`ToleranceError` with one line when malformed."""
    if not isinstance(spec, str) or not spec.strip():
        raise ToleranceError(f"{what}: empty tolerance; {_EXAMPLES}")
    default: list[tuple[float, float]] = []
    per_metric: dict[str, list[tuple[float, float]]] = {}
    for raw in spec.replace(" ", "").split(","):
        if not raw:
            raise ToleranceError(f"{what}: empty part in {spec!r}; {_EXAMPLES}")
        metric, sep, value = raw.rpartition(":")
        if sep:
            metric = metric.lower()
            if metric not in METRICS:
                raise ToleranceError(f"{what}: unknown metric {metric!r} in {spec!r}; {_EXAMPLES}")
            per_metric.setdefault(metric, []).append(_read_part(value, spec, what))
        else:
            default.append(_read_part(value, spec, what))

    def combine(parts: list[tuple[float, float]]) -> Rule:
        return Rule(pct=max(p for p, _ in parts), abs_mb=max(a for _, a in parts), floor_mb=floor_mb)

    rules: dict[str, Rule] = {}
    if default:
        rules = {m: combine(default) for m in METRICS}
    for metric, parts in per_metric.items():
        rules[metric] = combine(parts)
    return Tolerance(rules=rules, spec=spec)
