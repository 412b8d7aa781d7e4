"""Judging figures against budgets: one small function per budget kind, each returning a result that renders itself.

Why this shape (pytest-memray's): a new kind of budget is one new function appended to :data:`CHECKS`, not edits in
the hook code, the report and the JSON. The same functions judge a test's call phase and a Celery task's record
(:func:`judge_task_record`), so task budgets (``task=``) need only records fed to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .budgets import Budget, Limit, ResolvedBudget

#: Results at or above this share of their limit are listed as "close to budget" in the terminal summary.
NEAR_FRACTION = 0.9

MARKER_HELP = {
    "max_peak_mb": "max_peak_mb(mb, *, task=None): fail the test if the peak RSS of its call phase rises more than "
    "mb above the RSS at its start (mb: a number of MB or a size such as '1.5GiB'). With task='pattern' the budget "
    "applies to matching Celery tasks the test runs instead.",
    "max_delta_mb": "max_delta_mb(mb, *, task=None): fail the test if its call phase still holds more than mb of "
    "RSS at its end, after collecting garbage.",
    "max_rss_mb": "max_rss_mb(mb, *, task=None): fail the test if the absolute peak RSS of the process during its "
    "call phase exceeds mb (worker/OOM limits).",
}
MEMRAY_MARKER_HELP = {
    "limit_memory": "limit_memory(memory_limit): pytest-memray's marker, honored by pytest-memguard (pytest-memray "
    "is not active) as a peak budget on resident memory.",
    "limit_leaks": "limit_leaks(location_limit): pytest-memray's marker, honored by pytest-memguard (pytest-memray "
    "is not active) as a delta budget on resident memory held at the end of the test.",
}


class TaskRecord(Protocol):
    """What a per-task record must offer to be judged (issue 5's Celery records; any object with these)."""

    task_name: str
    task_id: str | None
    peak_delta_mb: float | None
    delta_mb: float | None
    peak_mb: float | None


@dataclass(frozen=True)
class Figures:
    """The figures a budget is judged on, all MB: ``peak_mb`` above start, ``delta_mb`` held, ``rss_mb`` absolute."""

    subject: str
    peak_mb: float | None
    delta_mb: float | None
    rss_mb: float | None
    peak_source: str
    children_mb: float | None = None
    gc: str = ""

    @classmethod
    def from_measurement(cls, m: Any, *, subject: str, children: bool = False, gc: str = "") -> Figures:
        """From a runtime ``Measurement``; with ``children`` the children's peak RSS is added to peak and rss."""
        peak, rss, source, kids = m.peak_delta_mb, m.peak_mb, m.peak_source, None
        if children and m.children:
            kids = m.children.get("peak_mb") or 0.0
            peak = None if peak is None else peak + kids
            rss = None if rss is None else rss + kids
            source = f"{source}+children {m.children.get('source', '')}".rstrip()
        gc_text = gc or _gc_text(m.gc)
        return cls(subject, peak, m.delta_mb, rss, source, kids, gc_text)

    @classmethod
    def from_record(cls, record: TaskRecord) -> Figures:
        subject = f"task {record.task_name}" + (f" [{record.task_id}]" if getattr(record, "task_id", None) else "")
        source = getattr(record, "peak_source", "") or "task record"
        return cls(subject, record.peak_delta_mb, record.delta_mb, record.peak_mb, source)


def _gc_text(gc_figures: dict | None) -> str:
    if not gc_figures:
        return ""
    policy = gc_figures.get("policy", "")
    return f"gc {policy}{' (collected)' if gc_figures.get('collected') else ''}"


@dataclass(frozen=True)
class BudgetResult:
    """One figure judged against one limit; ``exceeded`` is False when under it or when the figure is unknown."""

    kind: str
    what: str  # "peak 312.4MB above start"-style wording of the figure
    used_mb: float | None
    limit: Limit
    source: str
    subject: str = ""

    @property
    def exceeded(self) -> bool:
        return self.used_mb is not None and self.used_mb > self.limit.mb

    @property
    def ratio(self) -> float | None:
        if self.used_mb is None or self.limit.mb <= 0:
            return None
        return self.used_mb / self.limit.mb

    @property
    def near(self) -> bool:
        ratio = self.ratio
        return ratio is not None and not self.exceeded and ratio >= NEAR_FRACTION

    def line(self) -> str:
        """``memory budget exceeded: peak 312.4MB above start > max_peak_mb 200.0MB (kernel-hwm)``."""
        prefix = "memory budget exceeded: " if self.exceeded else "memory within budget: "
        who = f"{self.subject} " if self.subject.startswith("task ") else ""
        op = ">" if self.exceeded else "<="
        used = "?" if self.used_mb is None else f"{self.used_mb:.1f}MB"
        return (
            f"{prefix}{who}{self.what.format(used=used)} {op} {self.limit.name} {self.limit.mb:.1f}MB ({self.source})"
        )

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "used_mb": self.used_mb,
            "limit_mb": self.limit.mb,
            "limit_name": self.limit.name,
            "origin": self.limit.origin,
            "exceeded": self.exceeded,
            "line": self.line(),
        }


def check_peak(fig: Figures, budget: Budget) -> BudgetResult | None:
    """Peak RSS above the RSS at start (kernel high-water mark, so short spikes count)."""
    if budget.peak is None:
        return None
    return BudgetResult("peak", "peak {used} above start", fig.peak_mb, budget.peak, fig.peak_source, fig.subject)


def check_delta(fig: Figures, budget: Budget) -> BudgetResult | None:
    """RSS still held at the end, after garbage was collected (what a long-lived worker keeps)."""
    if budget.delta is None:
        return None
    source = f"rss, {fig.gc}" if fig.gc else "rss"
    return BudgetResult("delta", "delta {used} held at end", fig.delta_mb, budget.delta, source, fig.subject)


def check_rss(fig: Figures, budget: Budget) -> BudgetResult | None:
    """Absolute peak RSS of the process: what an OOM killer or a worker memory limit sees."""
    if budget.rss is None:
        return None
    return BudgetResult("rss", "rss peak {used}", fig.rss_mb, budget.rss, fig.peak_source, fig.subject)


CHECKS: list[Callable[[Figures, Budget], BudgetResult | None]] = [check_peak, check_delta, check_rss]


def judge(fig: Figures, budget: Budget) -> list[BudgetResult]:
    """Every applicable check's result (exceeded or not), in :data:`CHECKS` order."""
    return [result for check in CHECKS if (result := check(fig, budget)) is not None]


def judge_task_record(record: TaskRecord, resolved: ResolvedBudget) -> list[BudgetResult]:
    """Judge one task's record against the budget its name resolves to (``task=`` markers, then ``[tasks]``)."""
    return judge(Figures.from_record(record), resolved.for_task(record.task_name))
