"""The hunter on real workloads (fixtures/leaks/workloads.py): leaks flagged and located, traps not flagged."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from fixtures.leaks import workloads
from pytest_memguard.leaks import LeakHunter, ProfileUnavailable, profile_function

WORKLOADS_FILE = os.path.relpath(workloads.__file__)


@pytest.fixture(autouse=True)
def _fresh_workloads():
    workloads.reset()
    yield
    workloads.reset()


def _location(marker: str) -> str:
    return f"{WORKLOADS_FILE}:{workloads.leak_site_line(marker)}"


def test_ten_kb_leak_is_flagged_within_twenty_runs_and_its_line_named():
    result = LeakHunter(warmup=3, runs=10, types=False).hunt(workloads.leak_10kb)  # 13 calls in all
    assert result.leaking and result.verdict.metric == "heap"
    assert 9.5 < result.kb_per_run < 11.0
    assert result.sites[0].location == _location("leak_10kb")
    assert result.sites[0].grew_runs == 10
    headline = result.render().splitlines()[0]
    assert headline.startswith("LEAK ~10.") and "KB/run over 10 runs (heap), top sites: " in headline
    assert _location("leak_10kb") in headline


def test_leak_of_many_bytes_objects_is_located_and_its_type_named():
    result = LeakHunter(3, 10, types="on_leak", type_runs=3).hunt(workloads.leak_bytes_objects)
    assert result.leaking
    assert result.sites[0].location == _location("leak_bytes_objects")
    assert result.sites[0].count_growth >= 200 * 10
    assert result.types[0].type_name == "bytes" and result.types[0].per_run >= 200
    assert "bytes +200.0/run" in result.render()


def test_leak_through_finalizer_cycles_is_flagged():
    result = LeakHunter(3, 10, types=True).hunt(workloads.leak_cycles_with_del)
    assert result.leaking
    assert _location("leak_cycles_with_del") in {s.location for s in result.sites}
    assert "fixtures.leaks.workloads._Node" in {t.type_name for t in result.types}


def test_warm_once_cache_is_not_flagged_in_twenty_fresh_hunts():
    verdicts = []
    for _ in range(20):
        workloads.reset()
        result = LeakHunter(3, 10, types=False).hunt(workloads.warm_once_cache)
        verdicts.append(result.leaking)
    assert verdicts == [False] * 20


def test_allocate_and_free_is_never_flagged():
    results = [LeakHunter(3, 10, types=False).hunt(workloads.no_leak, 0.5) for _ in range(5)]
    assert [r.leaking for r in results] == [False] * 5
    assert all(r.sites == [] for r in results)


def test_the_hunter_does_not_report_itself():
    result = LeakHunter(1, 20, types=False).hunt(lambda: None)
    assert not result.leaking and result.sites == []
    assert abs(result.heap.kb_per_run) < 0.2


def test_max_leak_kb_turns_the_estimate_into_pass_fail():
    result = LeakHunter(3, 10, types=False).hunt(workloads.leak_10kb)
    assert result.check_limit(50).leaking is False
    assert result.check_limit(5).leaking is True


@pytest.mark.parametrize("frames", [None, 3])
def test_tracemalloc_state_is_restored_even_when_the_workload_raises(frames):
    if frames:
        tracemalloc.start(frames)
    calls = {"n": 0}

    def explode():
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError, match="boom"):
            LeakHunter(2, 10).hunt(explode)
        assert tracemalloc.is_tracing() is bool(frames)
        if frames:
            assert tracemalloc.get_traceback_limit() == frames
    finally:
        tracemalloc.stop()


def test_progress_reports_every_run():
    seen = []
    LeakHunter(2, 4, types=False, progress=lambda *a: seen.append(a)).hunt(lambda: None)
    assert seen == [("warmup", 1, 2), ("warmup", 2, 2)] + [("run", i, 4) for i in range(1, 5)]


def test_line_profile_of_a_named_function():
    try:
        text = profile_function(workloads.no_leak, 2.0)
    except ProfileUnavailable:  # pragma: no cover - memory-profiler is in the dev extra
        pytest.skip("memory-profiler not installed")
    assert "Mem usage" in text and "chunks = [bytes(1024)" in text
