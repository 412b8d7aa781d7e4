"""Growth estimates and verdicts on series shaped like real hunts."""

from __future__ import annotations

import pytest

from pytest_memguard.leaks import HuntSpecError, growth_per_run, judge, parse_hunt_spec, theil_sen

KB = 1024


def test_theil_sen_is_exact_on_a_line_and_ignores_one_outlier():
    line = [1000 + 500 * i for i in range(10)]
    assert theil_sen(line) == 500
    spiked = list(line)
    spiked[4] += 1_000_000
    assert theil_sen(spiked) == 500


def test_steady_growth_is_a_leak_with_its_rate():
    samples = [i * 12.3 * KB + (7 if i % 2 else -7) for i in range(11)]
    verdict = judge(samples, "heap")
    assert verdict.leaking and verdict.runs == 10
    assert abs(verdict.kb_per_run - 12.3) < 0.1
    assert verdict.render() == "LEAK ~12.3 KB/run over 10 runs (heap)"


def test_growth_that_stops_is_warm_up_not_a_leak():
    warm = [0, 200 * KB, 350 * KB, 420 * KB] + [420 * KB + (i % 3) * 100 for i in range(7)]
    verdict = judge(warm, "heap")
    assert not verdict.leaking and verdict.kb_per_run < 1.0  # the robust slope ignores the three growing runs
    late_warm = [0, 300 * KB, 600 * KB, 900 * KB, 1200 * KB] + [1200 * KB] * 6  # growth in 4 of 10 runs
    verdict = judge(late_warm, "heap")
    assert verdict.kb_per_run > 1.0 and not verdict.leaking and "warm-up" in verdict.reason
    one_jump = [0] + [500 * KB] * 10
    assert not judge(one_jump, "heap").leaking


def test_jitter_around_zero_and_tiny_growth_stay_under_the_floor():
    assert not judge([(i * 37) % 300 for i in range(11)], "heap").leaking
    assert not judge([i * 500 for i in range(11)], "heap").leaking  # 0.5 KB/run < 1 KB/run floor
    assert judge([i * 500 for i in range(11)], "heap", floor_kb=0.25).leaking  # a stricter max_leak_kb


def test_rss_needs_a_larger_floor_but_accepts_page_steps():
    steps = [(i // 3) * 1024 * KB for i in range(12)]  # 1 MB every third run: ~341 KB/run, allocator-shaped
    assert judge(steps, "rss").leaking
    assert not judge([i * 100 * KB for i in range(11)], "rss").leaking  # 100 KB/run is RSS noise


def test_too_few_runs_never_judged_leaking():
    assert not judge([0, 100 * KB, 200 * KB], "heap").leaking
    assert growth_per_run([5]).runs == 0


def test_hunt_spec():
    assert parse_hunt_spec(None) == (3, 10)
    assert parse_hunt_spec("5:20") == (5, 20)
    assert parse_hunt_spec("15") == (3, 15)
    for bad in ("x:y", "3:2", "-1:10"):
        with pytest.raises(HuntSpecError, match="--hunt-leaks"):
            parse_hunt_spec(bad)
