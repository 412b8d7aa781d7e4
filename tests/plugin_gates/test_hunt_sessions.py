"""Leak hunting through real sessions: the 10 KB/call leak flagged with its line, the warm-once cache not flagged,
fresh function-scoped fixtures, ``max_leak_kb`` pass/fail (the marker alone hunts), progress lines, the JSON
output, and ``--memguard-profile``."""

from __future__ import annotations

import pytest

from fixtures.leaks.workloads import leak_site_line

from .conftest import read_json

HUNTED = """
import pytest
from fixtures.leaks import workloads

@pytest.fixture
def bucket():
    return []

def test_leaks():
    workloads.leak_10kb()

def test_warm_cache():
    workloads.warm_once_cache()

def test_fresh_fixtures(bucket, tmp_path, monkeypatch, capsys):
    bucket.append(bytes(20 * 1024))     # a new bucket every run: not a leak
    (tmp_path / "out.txt").write_text("x" * 1000)
    monkeypatch.setenv("MEMGUARD_DEMO", "1")
    print("captured, not shown")
"""


def test_hunt_flags_the_10kb_leak_with_its_line_and_not_the_cache_or_fresh_fixtures(pytester, run):
    pytester.makepyfile(test_h=HUNTED)
    out_json = pytester.path / "out.json"
    result = run("--hunt-leaks", f"--memguard-json={out_json}")
    result.assert_outcomes(passed=3)  # without max_leak_kb a leak is reported, not failed
    site = f"workloads.py:{leak_site_line('leak_10kb')}"
    result.stdout.re_match_lines(
        [
            r"=+ memguard: leak hunt =+",
            r"test_h\.py::test_leaks:",
            rf"  LEAK ~\d+\.\d KB/run over 10 runs \(heap\), top sites: .*{site} \(\+\d+\.\d KB/run\)",
            r"    allocation sites that grew in \(nearly\) every run:",
            rf"      .*{site} \+\d+\.\d KB/run .*",
            r"          called from test_h\.py:\d+",
            r"    object types whose count grew every run:",
            r"      bytes \+.*",
            r"memguard: 3 test\(s\) hunted, 1 flagged",
        ]
    )
    # One progress/verdict line per test while the suite runs (output here is not a TTY).
    result.stdout.fnmatch_lines(
        [
            "memguard: hunt-leaks test_h.py::test_leaks: LEAK ~* KB/run over 10 runs (heap)*",
            "memguard: hunt-leaks test_h.py::test_warm_cache: no leak*",
            "memguard: hunt-leaks test_h.py::test_fresh_fixtures: no leak*",
        ]
    )
    assert "captured, not shown" not in result.stdout.str()
    leaks = {r["nodeid"]: r for r in read_json(out_json)["leaks"]}
    assert leaks["test_h.py::test_leaks"]["leaking"] is True
    assert leaks["test_h.py::test_leaks"]["hunt"]["sites"][0]["location"].endswith(site)
    assert leaks["test_h.py::test_warm_cache"]["leaking"] is False
    assert leaks["test_h.py::test_fresh_fixtures"]["leaking"] is False


LIMITS = """
import pytest
from fixtures.leaks import workloads

@pytest.mark.max_leak_kb(50)
def test_within_limit():
    workloads.leak_10kb()

@pytest.mark.max_leak_kb(5)
def test_over_limit():
    workloads.leak_10kb()

@pytest.mark.max_leak_kb(5)
def test_clean():
    workloads.no_leak(0.2)

@pytest.mark.max_leak_kb("lots")
def test_bad_marker():
    pass

def test_unmarked_is_not_hunted():
    workloads.leak_10kb()
"""


def test_max_leak_kb_alone_hunts_and_turns_the_verdict_into_pass_or_fail(pytester, run):
    pytester.makepyfile(test_l=LIMITS)
    result = run("--hunt-leaks=2:6", "-k", "not unmarked")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_l.py::test_over_limit - LeakLimitExceeded: leak limit exceeded: ~* KB/run over 6 runs "
            "(heap) > max_leak_kb 5",
            "ERROR test_l.py::test_bad_marker - Failed: pytest-memguard: bad max_leak_kb marker on "
            "test_l.py::test_bad_marker*",
        ]
    )
    alone = run("-k", "within or over or unmarked")  # no --hunt-leaks: only the marked tests are hunted
    alone.assert_outcomes(passed=2, failed=1)
    alone.stdout.fnmatch_lines(["*test_l.py::test_over_limit - LeakLimitExceeded: leak limit exceeded*"])
    alone.stdout.fnmatch_lines(["memguard: 2 test(s) hunted, 2 flagged"])
    assert "hunt-leaks test_l.py::test_unmarked_is_not_hunted" not in alone.stdout.str()


def test_verbose_progress_and_hunt_spec_errors(pytester, run):
    pytester.makepyfile(test_h=HUNTED)
    result = run("-v", "--hunt-leaks=1:4", "-k", "cache")
    result.stdout.fnmatch_lines(
        ["memguard: hunt-leaks test_h.py::test_warm_cache: *", "test_h.py::test_warm_cache PASSED*"]
    )
    bad = run("--hunt-leaks", "test_h.py")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: pytest-memguard: --hunt-leaks: cannot read 'test_h.py'*looks like a test path*"])


PROFILED = """
from fixtures.leaks import workloads

def test_profiled():
    data = bytearray(30 * 2 ** 20)
    del data

def test_calls_workload():
    workloads.no_leak(1.0)
"""


def test_memguard_profile_of_a_test_or_a_named_function(pytester, run):
    pytest.importorskip("memory_profiler")
    pytester.makepyfile(test_p=PROFILED)
    result = run("--memguard-profile=test_profiled")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [
            r"=+ memguard: line profile of test_profiled =+",
            r"during test_p\.py::test_profiled:",
            r"Line # +Mem usage +Increment +Occurrences +Line Contents",
            r".*",
            r" +\d+ .*def test_profiled\(\):",
            r" +\d+ +[\d.]+ MiB +[\d.]+ MiB +1 +data = bytearray\(30 \* 2 \*\* 20\)",
        ]
    )
    func = run("--memguard-profile=fixtures.leaks.workloads.no_leak")
    func.stdout.fnmatch_lines(["during test_p.py::test_calls_workload:", "*def no_leak(mb: float = 1.0) -> int:"])
    assert "during test_p.py::test_profiled" not in func.stdout.str()
