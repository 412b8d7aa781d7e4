"""The gate's verdicts, on made-up figures and on real measurements, and the three renderings."""

from __future__ import annotations

import json

from pytest_memguard.baseline import (
    Entry,
    compare,
    entries_from_results,
    entry_from_measurement,
    keep_min_peak,
    machine_differences,
    machine_info,
    machine_warning,
    parse_tolerance,
    render_json,
    render_markdown,
    render_text,
)
from pytest_memguard.runtime import MB, MemoryMonitor

TEN = parse_tolerance("10%")


def _suite(scale: float = 1.0) -> dict[str, Entry]:
    return {f"tests/t.py::test_{i}": Entry(10.0 * (i + 1) * scale, 1.0, 100.0 + i) for i in range(5)}


def test_twenty_percent_peak_regression_fails_at_ten_percent():
    base = _suite()
    now = dict(base)
    now["tests/t.py::test_3"] = Entry(40.0 * 1.2, 1.0, 103.0)
    result = compare(base, now, TEN)
    assert result.failed
    [change] = result.regressions
    assert (change.name, change.metric, change.baseline_mb, change.now_mb) == ("tests/t.py::test_3", "peak", 40.0, 48.0)
    assert round(change.change_pct, 1) == 20.0


def test_unchanged_figures_pass_twenty_times_out_of_twenty():
    outcomes = [compare(_suite(), _suite(), TEN).failed for _ in range(20)]
    assert outcomes == [False] * 20


def test_new_and_missing_are_reported_not_failed_and_improvements_listed():
    base = _suite()
    now = {k: v for k, v in _suite(0.5).items() if not k.endswith("_0")}
    now["tests/t.py::test_new"] = Entry(1.0, 0.0, 1.0)
    result = compare(base, now, TEN)
    assert not result.failed
    assert result.new == ["tests/t.py::test_new"] and result.missing == ["tests/t.py::test_0"]
    assert {c.name for c in result.improvements} == {f"tests/t.py::test_{i}" for i in range(1, 5)}


def test_unknown_figures_are_skipped_and_ungated_metrics_ignored():
    base = {"a": Entry(None, 1.0, 100.0)}
    now = {"a": Entry(50.0, 1.0, 500.0)}
    result = compare(base, now, parse_tolerance("peak:10%"))
    assert not result.failed and result.unchanged == []


def _allocate(mb: float) -> int:
    data = b"\x01" * int(mb * MB)  # filled, so every page is resident
    return len(data)


def _measure(mb: float) -> Entry:
    with MemoryMonitor("gate-workload", enable_gc=False) as monitor:
        _allocate(mb)
    return entry_from_measurement(monitor.measurement)


def test_real_measurements_no_false_regression_and_twenty_percent_more_is_flagged():
    """A workload allocating N MB measured 20 times against a baseline passes at 10 %; 1.2 N MB fails."""
    n = 40.0
    baseline = {"workload": keep_min_peak([_measure(n) for _ in range(3)])}
    tol = parse_tolerance("peak:10%")
    same = [compare(baseline, {"workload": _measure(n)}, tol) for _ in range(20)]
    assert [c.failed for c in same] == [False] * 20, [c.as_dict() for c in same if c.failed]
    bigger = [compare(baseline, {"workload": _measure(1.2 * n)}, tol) for _ in range(5)]
    assert [c.failed for c in bigger] == [True] * 5
    assert all(17.0 < c.regressions[0].change_pct < 23.0 for c in bigger)


def test_keep_min_peak_keeps_the_least_disturbed_run_whole():
    runs = [Entry(12.0, 3.0, 100.0), Entry(10.0, 1.0, 98.0), Entry(11.0, 0.0, 99.0)]
    assert keep_min_peak(runs) == Entry(10.0, 1.0, 98.0, runs=3)


def test_results_file_records_become_entries_with_the_documented_mapping():
    data = {
        "version": 1,
        "tests": [{"nodeid": "t.py::a", "peak_mb": 5.0, "delta_mb": 0.5, "rss_mb": 120.0, "tasks": []}],
        "tasks": [
            {"task_name": "proj.add", "peak_delta_mb": 2.0, "delta_mb": 0.1, "peak_mb": 90.0},
            {"task_name": "proj.add", "peak_delta_mb": 3.0, "delta_mb": 0.0, "peak_mb": 88.0},
        ],
    }
    entries = entries_from_results(data)
    assert entries["t.py::a"] == Entry(5.0, 0.5, 120.0, kind="test")
    assert entries["task:proj.add"] == Entry(3.0, 0.1, 90.0, kind="task")  # the worst call per metric


def test_machine_profile_differences_warn_in_one_line():
    here = machine_info()
    assert machine_differences(here, dict(here)) == []
    other = dict(
        here,
        cpu_count=(here["cpu_count"] or 1) * 4,
        total_ram_mb=(here["total_ram_mb"] or 1000) * 2,
        python="2.7.18",
        hostname="elsewhere",
    )
    warning = machine_warning(other, here, source="b.json")
    assert warning.startswith("baseline (b.json) recorded on a different machine: ")
    assert "cpu_count" in warning and "total RAM" in warning and "python 2.7 != " in warning
    assert "hostname" not in warning and "\n" not in warning


def test_renderers_show_the_same_table():
    base, now = _suite(), _suite()
    now["tests/t.py::test_2"] = Entry(36.0, 1.0, 102.0)
    now["tests/t.py::odd|name"] = Entry(1.0, 0.0, 1.0)
    result = compare(base, now, TEN, warnings=["baseline recorded on a different machine: cpu_count 8 != 2"])
    text = render_text(result)
    assert "name" in text and "baseline" in text and "change" in text
    assert "tests/t.py::test_2  peak" in text and "30.0MB" in text and "+6.0MB (+20.0%)" in text
    assert text.startswith("warning: baseline recorded on a different machine")
    md = render_markdown(result)
    assert md.startswith("### ❌ memory regressions")
    assert "| tests/t.py::test_2 | peak | 30.0MB | 36.0MB | +6.0MB (+20.0%) |" in md
    assert "`tests/t.py::odd|name`" in md
    data = json.loads(render_json(result))
    assert data["failed"] is True and data["regressions"][0]["change_mb"] == 6.0
    assert data["new"] == ["tests/t.py::odd|name"]
