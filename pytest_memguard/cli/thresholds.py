"""``--fail-above`` thresholds: reading ``rss=3GB,percent=80`` and checking a report against it.

Why exit codes: the report is meant for cron and CI, where "memory is too high" must be a status a script can act
on (exit 1) and say which limit was crossed, while a typo in the threshold itself is a usage error (exit 2) caught
before anything is measured.

Keys:

- ``rss=SIZE``: any single worker process's RSS (the one the kernel or ``--max-memory-per-child`` would kill);
- ``total=SIZE``: the sum of all worker processes' RSS;
- ``percent=N``: the workers' total RSS as a percentage of the effective limit;
- ``system=N``: memory used on the host, or in the cgroup when that is fuller, as a percentage.

Sizes are read by :func:`pytest_memguard.runtime.units.parse_size` (``3GB``, ``512MiB``, ``200`` = 200 MB).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..runtime.units import SizeError, format_bytes, parse_size
from .system_info import SystemSection
from .usage import UsageError
from .workers import WorkersSection

SIZE_KEYS = ("rss", "total")
PERCENT_KEYS = ("percent", "system")
_HOW = "use rss=SIZE, total=SIZE, percent=N and/or system=N, comma-separated, e.g. --fail-above rss=3GB,percent=80"


@dataclass(frozen=True)
class Threshold:
    key: str
    limit: float  # bytes for rss/total, percent for percent/system


@dataclass
class ThresholdResult:
    key: str
    limit: float
    value: float | None  # the measured figure (bytes or percent); None when unknown
    crossed: bool
    message: str


def _parse_percent(key: str, text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UsageError(f"--fail-above: {key}={text!r} is not a percentage; write e.g. {key}=80") from None
    if not 0 <= value <= 100:
        raise UsageError(f"--fail-above: {key}={text} must be between 0 and 100 (a percentage)")
    return value


def parse_fail_above(specs: Iterable[str]) -> list[Threshold]:
    """Read one or more ``--fail-above`` values into thresholds; raise UsageError naming the bad part."""
    thresholds: dict[str, Threshold] = {}
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or not value.strip():
                raise UsageError(f"--fail-above: {part!r} is not KEY=VALUE; {_HOW}")
            if key in thresholds:
                raise UsageError(f"--fail-above: {key} is given twice; give each key once")
            if key in SIZE_KEYS:
                try:
                    limit = float(parse_size(value.strip(), "MB", what=f"--fail-above {key}"))
                except SizeError as exc:
                    raise UsageError(str(exc)) from None
            elif key in PERCENT_KEYS:
                limit = _parse_percent(key, value)
            else:
                raise UsageError(f"--fail-above: unknown key {key!r} in {part!r}; {_HOW}")
            thresholds[key] = Threshold(key=key, limit=limit)
    return list(thresholds.values())


def _result(threshold: Threshold, value: float | None, what: str, shown: str, culprits: str = "") -> ThresholdResult:
    if value is None:
        return ThresholdResult(threshold.key, threshold.limit, None, False, f"{what}: unknown, not checked")
    crossed = value > threshold.limit
    limit_shown = format_bytes(threshold.limit) if threshold.key in SIZE_KEYS else f"{threshold.limit:g}%"
    verdict = "above" if crossed else "within"
    message = f"{what} {shown} is {verdict} {threshold.key}={limit_shown}{culprits if crossed else ''}"
    return ThresholdResult(threshold.key, threshold.limit, value, crossed, message)


def evaluate(thresholds: Iterable[Threshold], system: SystemSection, workers: WorkersSection) -> list[ThresholdResult]:
    """Check each threshold against the collected figures; a result says what was measured and where."""
    results = []
    for threshold in thresholds:
        if threshold.key == "rss":
            sized = [p for p in workers.processes if p.rss_bytes is not None]
            value = None if workers.error else max((p.rss_bytes for p in sized), default=0)
            over = [p for p in sized if p.rss_bytes > threshold.limit]
            culprits = ": " + ", ".join(f"pid {p.pid} ({p.role}) {format_bytes(p.rss_bytes)}" for p in over)
            shown = format_bytes(value) if value is not None else "?"
            results.append(_result(threshold, value, "largest worker process RSS", shown, culprits))
        elif threshold.key == "total":
            value = None if workers.error else workers.total_rss_bytes
            shown = f"{format_bytes(value)} in {len(workers.processes)} processes"
            results.append(_result(threshold, value, "worker total RSS", shown))
        elif threshold.key == "percent":
            value = workers.total_percent
            shown = f"{value}% of {format_bytes(workers.limit_bytes)}"
            results.append(_result(threshold, value, "worker total RSS", shown))
        elif threshold.key == "system":
            value = system.pressure_percent()
            source = "cgroup" if system.cgroup and system.cgroup.used_percent == value else "host"
            results.append(_result(threshold, value, f"system memory used ({source})", f"{value}%"))
    return results
