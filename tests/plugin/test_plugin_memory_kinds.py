"""Resident memory is what counts: forked children (with --memguard-children), touched vs untouched mmap."""

from __future__ import annotations

import pytest

CHILD = """
import multiprocessing, os, time
import pytest
MB = 2 ** 20
ctx = multiprocessing.get_context("fork")

def touch_200mb():
    buf = bytearray(200 * MB)   # every page touched, in the child only
    time.sleep(0.1)

@pytest.mark.max_peak_mb(150)
def test_child():
    p = ctx.Process(target=touch_200mb)
    p.start()
    p.join()
    assert p.exitcode == 0
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_child_counts_only_with_children_option(pytester, run):
    pytester.makepyfile(test_c=CHILD)
    run().assert_outcomes(passed=1)  # the parent itself stays small
    result = run("--memguard-children")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [r"memory budget exceeded: peak 2\d\d\.\dMB above start > max_peak_mb 150\.0MB \(kernel-hwm\+children .*\)"]
    )
    result.stdout.fnmatch_lines(["children: peak 2*MB private (counted in peak and rss)"])


def test_children_ini_key(pytester, run):
    pytester.makepyfile(test_c=CHILD)
    pytester.makeini("[pytest]\nmemguard_children = true\n")
    result = run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["memguard: budget no default; children on*"])


def test_untouched_mmap_costs_nothing_touched_mmap_counts(pytester, run):
    pytester.makepyfile(
        test_m="""
import mmap
import pytest
MB = 2 ** 20

@pytest.mark.max_peak_mb(20)
def test_untouched():
    m = mmap.mmap(-1, 500 * MB)   # reserved, never written: not resident
    m.close()

@pytest.mark.max_peak_mb(20)
def test_touched():
    m = mmap.mmap(-1, 100 * MB)
    for offset in range(0, 100 * MB, mmap.PAGESIZE):
        m[offset] = 1              # every page written: resident
    m.close()
"""
    )
    result = run("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_untouched PASSED*", "*test_touched FAILED*"])
    result.stdout.re_match_lines([r"memory budget exceeded: peak (9\d|1\d\d)\.\dMB above start > max_peak_mb 20\.0MB"])


def test_rss_budget_is_the_absolute_process_peak(pytester, run):
    pytester.makepyfile(
        test_r="""
import pytest
@pytest.mark.max_rss_mb(10)      # any Python process is above 10 MB resident
def test_process():
    pass

@pytest.mark.max_rss_mb("64GiB")
def test_fits():
    pass
"""
    )
    result = run()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.re_match_lines([r"memory budget exceeded: rss peak \d+\.\dMB > max_rss_mb 10\.0MB \(kernel-hwm\)"])
