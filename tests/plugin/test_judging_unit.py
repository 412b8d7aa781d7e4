"""Judging real MemoryMonitor measurements against budgets, for tests and for task records (issue 5 feeds these)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_memguard.plugin.budgets import Budget, Limit, ResolvedBudget, parse_spec
from pytest_memguard.plugin.markers import Figures, judge, judge_task_record
from pytest_memguard.runtime import MB, MemoryMonitor

LINE = re.compile(r"^memory budget exceeded: peak (\d+\.\d)MB above start > max_peak_mb 10\.0MB \((\S+)\)$")


def _measure(n_mb: int, *, keep: bool = False, name: str = "work", task_id: str | None = None):
    held = []
    with MemoryMonitor(name, task_id=task_id, gc_policy="never") as monitor:
        buf = bytearray(n_mb * MB)  # bytearray() zero-fills: the pages are touched
        if keep:
            held.append(buf)
        del buf
    return monitor.measurement, held


def test_peak_line_format_from_a_real_measurement():
    m, _ = _measure(40)
    budget = Budget(peak=Limit(10.0, "max_peak_mb", "test"))
    (result,) = judge(Figures.from_measurement(m, subject="t"), budget)
    assert result.exceeded and result.kind == "peak"
    match = LINE.match(result.line())
    assert match, result.line()
    assert float(match.group(1)) >= 39 and match.group(2) == m.peak_source


def test_all_three_kinds_and_the_near_fraction():
    m, held = _measure(30, keep=True)
    fig = Figures.from_measurement(m, subject="t")
    budget = Budget(
        peak=Limit(1000.0, "max_peak_mb", "o"),
        delta=Limit(5.0, "max_delta_mb", "o"),
        rss=Limit(fig.rss_mb / 0.95, "max_rss_mb", "o"),
    )
    peak, delta, rss = judge(fig, budget)
    assert not peak.exceeded and not peak.near
    assert delta.exceeded and delta.line().startswith("memory budget exceeded: delta 3")
    assert not rss.exceeded and rss.near  # 95 % of its limit
    assert held


@dataclass
class TaskRecord:
    """The shape issue 5's Celery records will have."""

    task_name: str
    task_id: str | None
    peak_delta_mb: float | None
    delta_mb: float | None
    peak_mb: float | None
    peak_source: str = ""


def _record(m) -> TaskRecord:
    return TaskRecord(m.task_name, m.task_id, m.peak_delta_mb, m.delta_mb, m.peak_mb, m.peak_source)


def test_task_records_judged_by_task_markers_then_file_patterns():
    config = parse_spec("peak=1", origin="t")  # the test's default never budgets tasks
    config = type(config)(default=config.default, tasks=(("app.tasks.*", Budget(rss=Limit(1.0, "max_rss_mb", "f"))),))
    resolved = ResolvedBudget(
        test=Budget(),
        tasks=(("app.tasks.render*", Budget(peak=Limit(10.0, "max_peak_mb", "marker"))),),
        config=config,
    )
    big, _ = _measure(40, name="app.tasks.render_pdf", task_id="abc-1")
    small, _ = _measure(1, name="app.tasks.render_thumb", task_id="abc-2")
    other, _ = _measure(40, name="other.task")

    results = judge_task_record(_record(big), resolved)
    assert [r.kind for r in results] == ["peak", "rss"]
    assert results[0].exceeded
    assert results[0].line().startswith("memory budget exceeded: task app.tasks.render_pdf [abc-1] peak ")
    assert results[1].exceeded  # the file's rss=1MB for app.tasks.*: any real process is above it
    assert not judge_task_record(_record(small), resolved)[0].exceeded
    assert judge_task_record(_record(other), resolved) == []  # no pattern matches: nothing to judge


def test_unknown_figures_never_fail():
    fig = Figures("t", None, None, None, "kernel-hwm")
    results = judge(fig, Budget(peak=Limit(1.0, "max_peak_mb", "o"), delta=Limit(1.0, "max_delta_mb", "o")))
    assert [r.exceeded for r in results] == [False, False]
    assert "?" in results[0].line()
