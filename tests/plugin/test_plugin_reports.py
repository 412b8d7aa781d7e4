"""Where the memory went (traced sites, re-run, types) and the session's reports (summary, JSON, JUnit, xdist)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

SUITE = """
import pytest
MB = 2 ** 20
HELD = []

def make_rows(n):
    return [bytes(1000) for _ in range(n)]

def build():
    return make_rows(60000)

@pytest.mark.max_peak_mb(20)
def test_peaky():
    rows = build()
    del rows

@pytest.mark.max_delta_mb(5)
def test_leaky():
    HELD.append(build())

@pytest.mark.max_peak_mb(100)
def test_near():
    buf = bytearray(95 * MB)

def test_unbudgeted():
    buf = bytearray(30 * MB)
"""


def test_trace_shows_the_sites_that_grew_without_harness_frames(pytester, run):
    pytester.makepyfile(test_t=SUITE)
    result = run("--memguard-trace", "--memguard-trace-frames=5", "-k", "peaky or leaky")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*_ test_peaky _*",
            "allocation sites holding memory near the peak (traced Python heap *MB):",
            "*MB in *blocks  test_t.py:6",
            "*called from test_t.py:9",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_leaky _*",
            "allocation sites still holding memory at the end of the call*",
            "*MB in*blocks  test_t.py:6",
        ]
    )
    assert "memguard: budget no default; children off, trace on (5 frames)" in out
    sections = out.split("memguard: memory")
    assert not any(s in out for s in ("_pytest/", "pluggy/", "pytest_memguard/")), sections[1][:2000]


def test_rerun_traced_collects_sites_and_types_only_for_failures(pytester, run):
    pytester.makepyfile(test_t=SUITE)
    result = run("--memguard-rerun-traced", "-k", "peaky or near")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_peaky _*",
            "re-run traced (10 frames): peak *MB above start",
            "allocation sites holding memory near the peak*",
            "*MB in *blocks  test_t.py:6",
            "object types that grew (pympler; size, count):",
        ]
    )
    assert result.stdout.str().count("re-run traced") == 1


def test_summary_json_and_junit(pytester, run):
    pytester.makepyfile(test_t=SUITE)
    out_json = pytester.path / "out" / "memory.json"
    result = run(
        f"--memguard-json={out_json}", "--junitxml=junit.xml", "--memguard-top=2", "-k", "leaky or near or unb"
    )
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= memguard: memory =*",
            "top 2 test(s) by peak above start:",
            "* 9?.?MB  test_t.py::test_near  (budget 100.0MB)",
            "*",
            "close to budget (within 10%):",
            "  test_t.py::test_near: peak 9?.?MB of max_peak_mb 100.0MB",
            "over budget: 1 test(s)",
            "  test_t.py::test_leaky: memory budget exceeded: delta *",
            f"memguard: figures written to {out_json}",
        ]
    )
    data = json.loads(out_json.read_text())
    assert data["version"] == 1 and data["tasks"] == []
    tests = {t["nodeid"]: t for t in data["tests"]}
    assert set(tests) == {"test_t.py::test_leaky", "test_t.py::test_near", "test_t.py::test_unbudgeted"}
    near = tests["test_t.py::test_near"]
    assert near["outcome"] == "passed" and near["budget"] == {"peak_mb": 100.0} and near["tasks"] == []
    assert 90 < near["peak_mb"] < 100 and near["rss_mb"] > near["peak_mb"] and near["peak_source"] == "kernel-hwm"
    assert tests["test_t.py::test_leaky"]["outcome"] == "failed" and tests["test_t.py::test_leaky"]["delta_mb"] > 40
    assert tests["test_t.py::test_unbudgeted"]["budget"] == {}
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in ET.parse(pytester.path / "junit.xml").iter("testcase")
        for p in case.iter("property")
    }
    assert float(props[("test_near", "memguard_peak_mb")]) > 90
    assert props[("test_near", "memguard_budget_peak_mb")] == "100.0"
    assert props[("test_leaky", "memguard_exceeded")].startswith("memory budget exceeded: delta")


def test_no_summary_when_nothing_is_budgeted(pytester, run):
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    result = run()
    result.assert_outcomes(passed=1)
    assert "= memguard: memory =" not in result.stdout.str()


def test_xdist_budgets_on_workers_summary_and_json_on_controller(pytester, run):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_t=SUITE)
    out_json = pytester.path / "memory.json"
    result = run("-n", "2", f"--memguard-json={out_json}", "-k", "leaky or near or unb or peaky")
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(["*= memguard: memory =*", "over budget: 2 test(s)"])
    result.stdout.fnmatch_lines(["memory budget exceeded: peak * > max_peak_mb 20.0MB (kernel-hwm)"])
    data = json.loads(out_json.read_text())
    assert len(data["tests"]) == 4
    assert {t.get("worker") for t in data["tests"]} <= {"gw0", "gw1"}
    assert all(t["peak_mb"] is not None for t in data["tests"])
