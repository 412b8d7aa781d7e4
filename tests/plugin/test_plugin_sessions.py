"""Budgets in real pytest sessions: failures, sections, options, ini, files, bad input, pytest-memray markers.

Subprocess sessions (``runpytest_subprocess``): the kernel's high-water mark is per process, so an in-process run
would mix the outer session's peaks with the inner one's.
"""

from __future__ import annotations

import importlib.util

import pytest

ALLOC = """
import pytest
MB = 2 ** 20

def use(n):
    buf = bytearray(n * MB)  # zero-filled: every page touched
    return len(buf)
"""


def test_over_budget_fails_with_one_line_and_a_memory_section(pytester, run):
    pytester.makepyfile(
        test_s=ALLOC
        + """
@pytest.mark.max_peak_mb(50)
def test_big():
    use(120)

@pytest.mark.max_peak_mb("1GiB")
def test_small():
    use(10)
"""
    )
    result = run()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.re_match_lines(
        [
            r"_+ test_big _+",
            r"memory budget exceeded: peak 1[12]\d\.\dMB above start > max_peak_mb 50\.0MB \(kernel-hwm\)",
            r"-+ memguard: memory -+",
            r"peak 1[12]\d\.\dMB above start from .*",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_s.py::test_big - MemoryBudgetExceeded: memory budget exceeded: *"])
    assert "Traceback" not in result.stdout.str()


def test_own_failure_is_kept_and_gets_the_memory_section(pytester, run):
    pytester.makepyfile(
        test_own=ALLOC
        + """
@pytest.mark.max_peak_mb(10)
def test_fails():
    use(40)
    assert 1 == 2
"""
    )
    result = run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       assert 1 == 2",
            "*- memguard: memory -*",
            "memory budget exceeded: peak *MB above start > max_peak_mb 10.0MB*",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_own.py::test_fails - assert 1 == 2"])


def test_delta_budget_sees_held_memory_not_freed_memory(pytester, run):
    pytester.makepyfile(
        test_d=ALLOC
        + """
HELD = []

@pytest.mark.max_delta_mb(5)
def test_frees():
    data = [bytes(1000) for _ in range(40000)]   # 40 MB of small objects, freed at return
    del data

@pytest.mark.max_delta_mb(5)
def test_holds():
    HELD.append([bytes(1000) for _ in range(40000)])
"""
    )
    result = run("-v")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_frees PASSED*", "*test_holds FAILED*"])
    result.stdout.fnmatch_lines(["memory budget exceeded: delta *MB held at end > max_delta_mb 5.0MB (rss, gc *)"])


def test_option_spec_and_markers_override_per_kind(pytester, run):
    pytester.makepyfile(
        test_o=ALLOC
        + """
def test_default():
    use(60)

@pytest.mark.max_peak_mb(500)
def test_marked():
    use(60)
"""
    )
    result = run("--memory-budget=peak=30MB,rss=100GB")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_default - MemoryBudgetExceeded: * > max_peak_mb 30.0MB*"])
    result.stdout.fnmatch_lines(["memguard: budget peak=30MB,rss=102400MB (from --memory-budget)*"])


def test_ini_key_and_budgets_file_with_patterns(pytester, run):
    pytester.makepyfile(test_f=ALLOC + "\ndef test_heavy():\n    use(60)\n\ndef test_light():\n    use(60)\n")
    pytester.path.joinpath("budgets.toml").write_text(
        '[default]\npeak = "20MB"\n[tests]\n"test_f.py::test_heavy" = { peak = "500MB" }\n'
    )
    pytester.makeini("[pytest]\nmemory_budget = budgets.toml\n")
    result = run("-v")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_heavy PASSED*", "*test_light FAILED*"])
    result.stdout.fnmatch_lines(["*budget from budgets file *budgets.toml (ini key memory_budget*) [[]default[]]"])
    # the command line replaces the ini value
    run("--memory-budget=1GB").assert_outcomes(passed=2)


@pytest.mark.parametrize(
    "args, files, fragment",
    [
        (["--memory-budget=huge"], {}, "--memory-budget: peak: cannot read 'huge' as a size*"),
        (["--memory-budget=nope/budgets.toml"], {}, "*budgets file 'nope/budgets.toml' not found*"),
        (["--memory-budget=b.toml"], {"b.toml": "[default\n"}, "*b.toml (--memory-budget): not valid TOML*"),
        (["--memory-budget=b.json"], {"b.json": "{'a': 1}"}, "*b.json (--memory-budget): not valid JSON*"),
        (["--memguard-top=-1"], {}, "*--memguard-top / ini memguard_top: must be >= 0, got -1"),
    ],
)
def test_bad_configuration_is_a_usage_error(pytester, run, args, files, fragment):
    pytester.makepyfile(test_x="def test_x(): pass\n")
    for name, text in files.items():
        pytester.path.joinpath(name).write_text(text)
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-memguard: *" + fragment.lstrip("*")])
    assert "Traceback" not in result.stderr.str()


def test_bad_marker_errors_that_test_only(pytester, run):
    pytester.makepyfile(
        test_m="""
import pytest
@pytest.mark.max_peak_mb("lots")
def test_bad(): pass
def test_fine(): pass
"""
    )
    result = run()
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "ERROR test_m.py::test_bad - Failed: pytest-memguard: bad memory budget: "
            "@pytest.mark.max_peak_mb on test_m.py::test_bad: cannot read 'lots'*"
        ]
    )


def test_markers_are_registered(pytester, run):
    result = run("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.max_peak_mb(mb, *, task=None):*",
            "@pytest.mark.max_delta_mb(mb, *, task=None):*",
            "@pytest.mark.max_rss_mb(mb, *, task=None):*",
        ]
    )


def test_memray_markers_honored_when_memray_is_not_active(pytester, run):
    pytester.makepyfile(
        test_r=ALLOC
        + """
@pytest.mark.limit_memory("24 MB")
def test_peak():
    use(60)

@pytest.mark.limit_leaks("1 MB", filter_fn=None)
def test_leak():
    global KEEP
    KEEP = [bytes(1000) for _ in range(20000)]
"""
    )
    result = run("--strict-markers")
    result.assert_outcomes(failed=2)
    header = "memguard: pytest-memray is not active; limit_memory/limit_leaks markers are honored as *"
    result.stdout.fnmatch_lines([header])
    assert result.stdout.str().count("pytest-memray is not active") == 1
    result.stdout.fnmatch_lines(["*test_peak - MemoryBudgetExceeded: * > limit_memory 24.0MB (kernel-hwm)"])
    result.stdout.fnmatch_lines(
        ["*test_leak - MemoryBudgetExceeded: memory budget exceeded: delta * > limit_leaks 1.0MB*"]
    )


@pytest.mark.skipif(importlib.util.find_spec("pytest_memray") is None, reason="pytest-memray not installed")
def test_memray_markers_left_to_memray_when_it_is_active(pytester, run):
    pytester.makepyfile(test_r=ALLOC + '\n@pytest.mark.limit_memory("100 MB")\ndef test_peak():\n    use(1)\n')
    result = run(memray=True)
    result.assert_outcomes(passed=1)
    assert "pytest-memray is not active" not in result.stdout.str()
    assert "MemoryBudgetExceeded" not in result.stdout.str()
