"""The regression gate through real sessions: save, compare, tolerance, improvements, new/missing, machine
warnings, unusable baselines, xdist, --memory-repeat, and the machine-readable outputs (JSON, JUnit)."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import read_json

# The size a test allocates is read from a file the test rewrites between sessions (the "code change").
WORKLOAD = """
import pathlib
import pytest

MB = 2 ** 20
HERE = pathlib.Path(__file__).parent

def use(mb):
    buf = bytearray(int(mb * MB))  # zero-filled: every page touched
    return len(buf)

def test_work():
    use(float((HERE / "size.txt").read_text()))

def test_small():
    use(5)

def test_nothing():
    pass
"""


@pytest.fixture
def workload(pytester):
    pytester.makepyfile(test_w=WORKLOAD)

    def set_size(mb: float) -> None:
        (pytester.path / "size.txt").write_text(str(mb))

    set_size(40)
    return set_size


def test_save_writes_every_test_with_machine_info_then_unchanged_runs_pass(pytester, run, workload):
    saved = run("--memory-baseline-save")
    assert saved.ret == 0, saved.stdout.str()
    path = pytester.path / ".memguard" / "baseline.json"
    saved.stdout.fnmatch_lines([f"memguard: baseline saved to {path}: 3 test(s), 0 task(s)*"])
    data = read_json(path)
    assert data["kind"] == "memguard-baseline"
    assert set(data["entries"]) == {"test_w.py::test_work", "test_w.py::test_small", "test_w.py::test_nothing"}
    assert 38 < data["entries"]["test_w.py::test_work"]["peak_mb"] < 42
    assert {"platform", "python", "arch", "cpu_count", "total_ram_mb"} <= set(data["machine"])
    for _ in range(3):
        result = run("--memory-baseline-compare", "--memory-regression=10%")
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["0 regression(s), 0 improvement(s), * 0 new, 0 missing*", "*gate passed*"])


def test_peak_regression_of_20_percent_fails_the_session_at_10_percent_once_as_a_table(pytester, run, workload):
    assert run("--memory-baseline-save").ret == 0
    workload(48)
    out_json = pytester.path / "out.json"
    junit = pytester.path / "junit.xml"
    result = run("--memory-regression=10%", f"--memguard-json={out_json}", f"--junitxml={junit}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3)  # the gate fails the session, not a test
    text = result.stdout.str()
    assert text.count("Memory regressions:") == 1
    result.stdout.re_match_lines(
        [
            r"name +metric +baseline +now +change",
            r"test_w\.py::test_work +peak +(39|40)\.\dMB +4[78]\.\dMB +\+[78]\.\dMB \(\+(19|20|21)\.\d%\)",
        ]
    )
    result.stdout.fnmatch_lines(["*memory regression gate FAILED: * regression(s) against *baseline.json"])
    comparison = read_json(out_json)["comparison"]
    assert comparison["failed"] is True
    assert any(c["name"] == "test_w.py::test_work" and c["metric"] == "peak" for c in comparison["regressions"])
    xml = junit.read_text()
    assert re.search(r'name="memguard_baseline_peak_mb" value="(39|40)\.\d+"', xml)
    assert re.search(r'name="memguard_regression" value="peak (39|40)\.\dMB -&gt; 4[78]\.\dMB', xml)


def test_improvements_listed_and_new_or_missing_tests_reported_not_failed(pytester, run, workload):
    assert run("--memory-baseline-save").ret == 0
    workload(20)
    pytester.makepyfile(test_extra="def test_new_one():\n    pass\n")
    result = run("--memory-baseline-compare", "-k", "not test_nothing")
    assert result.ret == 0, result.stdout.str()
    result.stdout.re_match_lines(
        [r"Memory improvements:", r".*", r".*", r"test_w\.py::test_work +peak +(39|40)\.\dMB +(19|20)\.\dMB +-.*"]
    )
    result.stdout.fnmatch_lines(
        [
            "New (not in baseline): test_extra.py::test_new_one",
            "Missing (in baseline, not measured now): test_w.py::test_nothing",
            "0 regression(s), * 1 new, 1 missing*",
        ]
    )


def test_baseline_from_another_machine_profile_warns(pytester, run, workload):
    assert run("--memory-baseline-save").ret == 0
    path = pytester.path / ".memguard" / "baseline.json"
    data = read_json(path)
    data["machine"]["cpu_count"] = 999
    path.write_text(json.dumps(data))
    result = run("--memory-baseline-compare")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "memguard: warning: baseline (*baseline.json) recorded on a different machine: cpu_count 999 != *",
            "warning: baseline (*baseline.json) recorded on a different machine: cpu_count 999 != *",
        ]
    )


@pytest.mark.parametrize(
    "content, problem",
    [('{"entries": {', "corrupt baseline (invalid JSON"), ('{"kind": "coverage", "version": 1}', "not a memguard")],
)
@pytest.mark.parametrize("mode", ["--memory-baseline-save", "--memory-baseline-compare"])
def test_unusable_baseline_is_one_line_usage_error_naming_it_and_left_untouched(
    pytester, run, workload, content, problem, mode
):
    path = pytester.path / "ci" / "base.json"
    path.parent.mkdir()
    path.write_text(content)
    result = run(mode, "--memory-baseline=ci/base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()
    assert errors[0].startswith(f"ERROR: pytest-memguard: {path}: {problem}")
    assert path.read_text() == content


def test_compare_without_a_baseline_is_a_usage_error_unless_saving_one(pytester, run, workload):
    result = run("--memory-baseline-compare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-memguard: *baseline.json: no baseline file; create it with*"])
    first = run("--memory-baseline-compare", "--memory-baseline-save")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["memguard: no baseline at *baseline.json yet: nothing compared*"])
    assert (pytester.path / ".memguard" / "baseline.json").exists()


def test_bad_tolerance_is_a_usage_error(run, workload):
    result = run("--memory-regression=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-memguard: --memory-regression: cannot read 'lots'*"])


# Fresh pages from mmap, touched one by one: a bytearray may reuse memory a previous test on the same xdist worker
# freed, so its peak depended on which tests that worker happened to run first (a 2 MB test measured 0.3 MB in one
# run and 0.5 MB in the next, +73 %, failing the 25 % gate on scheduling alone). Even fresh pages measured ~1.3 to
# ~1.7 MB under their size, depending on the worker's state (a 2 MB test: 0.3 MB, then 0.7 MB): so every test
# allocates at least 8 MB, where that half-megabyte is ~7 %, well inside the 25 % gate this test checks.
XDIST_TESTS = """
import mmap
import types
import pytest
from pytest_memguard.plugin import get_manager

@pytest.mark.parametrize("i", range(16))
def test_many(i):
    size = (i + 8) * 2 ** 20
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    block.close()

def test_with_task(request):
    record = types.SimpleNamespace(task_name="proj.tasks.resize", task_id="t1", peak_delta_mb=12.0, delta_mb=0.5,
                                   peak_mb=95.0)
    get_manager(request.config).record_task(record)
"""


def test_xdist_save_writes_one_file_with_every_test_and_task(pytester, run):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_x=XDIST_TESTS)
    result = run("-n", "2", "--memory-baseline-save")
    assert result.ret == 0, result.stdout.str()
    entries = read_json(pytester.path / ".memguard" / "baseline.json")["entries"]
    expected = {f"test_x.py::test_many[{i}]" for i in range(16)} | {"test_x.py::test_with_task"}
    assert set(entries) == expected | {"task:proj.tasks.resize"}
    task = entries["task:proj.tasks.resize"]
    assert (task["peak_mb"], task["delta_mb"], task["rss_mb"], task["kind"]) == (12.0, 0.5, 95.0, "task")
    again = run("-n", "2", "--memory-baseline-compare", "--memory-regression=peak:25%,+1MB")
    assert again.ret == 0, again.stdout.str()
    again.stdout.fnmatch_lines(["0 regression(s), * 0 new, 0 missing*"])


REPEAT_TEST = """
CALLS = []

def test_noisy():
    CALLS.append(1)
    size = 40 if len(CALLS) == 1 else 20   # the first run is disturbed; later runs need 20 MB
    bytearray(size * 2 ** 20)

def test_fails_once_only():
    CALLS.append(2)
    assert False
"""


def test_memory_repeat_keeps_the_run_with_the_smallest_peak(pytester, run):
    pytester.makepyfile(test_r=REPEAT_TEST)
    out_json = pytester.path / "out.json"
    result = run("--memory-repeat=3", "--memory-baseline-save", f"--memguard-json={out_json}")
    result.assert_outcomes(passed=1, failed=1)
    tests = {t["nodeid"]: t for t in read_json(out_json)["tests"]}
    noisy = tests["test_r.py::test_noisy"]
    assert noisy["diagnostics"]["repeat"]["runs"] == 3
    first, *later = noisy["diagnostics"]["repeat"]["peaks_mb"]
    assert first > 35 and all(15 < p < 25 for p in later)
    assert 15 < noisy["peak_mb"] < 25
    assert "repeat" not in tests["test_r.py::test_fails_once_only"].get("diagnostics", {})  # failing: not repeated
    entries = read_json(pytester.path / ".memguard" / "baseline.json")["entries"]
    assert entries["test_r.py::test_noisy"]["runs"] == 3
    assert "test_r.py::test_fails_once_only" not in entries  # a failing test's figures are not a baseline
