"""Tolerance specs: what each form means, and one-line errors for bad ones."""

from __future__ import annotations

import pytest

from pytest_memguard.baseline import NOISE_FLOOR_MB, ToleranceError, parse_tolerance


def test_percentage_gates_every_metric():
    tol = parse_tolerance("10%")
    assert tol.metrics == ("peak", "delta", "rss")
    rule = tol.rule("peak")
    assert rule.regressed(100.0, 110.5) and not rule.regressed(100.0, 109.5)
    assert rule.improved(100.0, 89.0) and not rule.improved(100.0, 91.0)


def test_absolute_accepts_units_and_plain_numbers_in_mb():
    assert parse_tolerance("+5MB").rule("rss").abs_mb == 5.0
    assert parse_tolerance("+512KiB").rule("rss").abs_mb == 0.5
    assert parse_tolerance("2").rule("rss").abs_mb == 2.0


def test_both_parts_must_be_exceeded():
    rule = parse_tolerance("10%,+5MB").rule("peak")
    assert not rule.regressed(2.0, 2.5)  # +25 % but only +0.5 MB
    assert not rule.regressed(2000.0, 2006.0)  # +6 MB but only +0.3 %
    assert rule.regressed(20.0, 26.0)  # +30 % and +6 MB


def test_per_metric_rules_gate_only_named_metrics_and_combine():
    tol = parse_tolerance("peak:10%, delta:+2MB, peak:+1MB")
    assert tol.metrics == ("peak", "delta")
    assert tol.rule("rss") is None
    assert (tol.rule("peak").pct, tol.rule("peak").abs_mb) == (0.10, 1.0)
    assert (tol.rule("delta").pct, tol.rule("delta").abs_mb) == (0.0, 2.0)


def test_default_with_override():
    tol = parse_tolerance("10%,delta:+2MB")
    assert tol.rule("rss").pct == 0.10 and tol.rule("delta").pct == 0.0 and tol.rule("delta").abs_mb == 2.0


def test_noise_floor_keeps_a_zero_baseline_from_failing_on_one_page():
    rule = parse_tolerance("10%").rule("delta")
    assert not rule.regressed(0.0, NOISE_FLOOR_MB / 2)
    assert rule.regressed(0.0, NOISE_FLOOR_MB * 2)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "empty tolerance"),
        ("10%,", "empty part"),
        ("ten%", "percentage"),
        ("-5MB", "negative"),
        ("+5 parsecs", "cannot read"),
        ("heap:10%", "unknown metric 'heap'"),
    ],
)
def test_bad_specs_give_one_line_with_the_value_and_examples(spec, words):
    with pytest.raises(ToleranceError) as info:
        parse_tolerance(spec)
    message = str(info.value)
    assert words in message and "--memory-regression" in message and "peak:10%" in message
    assert "\n" not in message
