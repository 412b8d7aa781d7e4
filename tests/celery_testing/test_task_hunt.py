"""``--hunt-leaks`` hunts each Celery task a test started, on its own and in the test's mode: a leak that lives only
in the worker process that ran the task is flagged with its KB/run (retained RSS of that process), a task that keeps
nothing is not, an eager leak is named by its file:line, and ``max_leak_kb(kb, task=...)`` fails the test.

One pytester session (one worker start-up) holds the worker and eager cases."""

from __future__ import annotations

import re

from fixtures.celery_tasks import process_leak_line
from pytest_memguard.celery.hunt import MB, judge_process
from pytest_memguard.celery.records import TaskMemory

from .conftest import outcomes_by_test, read_json

INNER = """
import pytest

from fixtures import celery_tasks as t


@pytest.mark.celery_mode("worker")
def test_worker_tasks(celery_run):
    assert celery_run(t.process_leak, 1024).value >= 1    # the worker's child keeps 1 MiB; this process nothing
    assert celery_run(t.no_leak, kb=1024).value == 1 << 20


@pytest.mark.celery_mode("eager")
def test_eager_tasks(celery_run):
    celery_run(t.process_leak, 64)
    celery_run(t.no_leak, kb=64)


@pytest.mark.celery_mode("eager")
def test_eager_noop(celery_run):
    celery_run(t.noop)
    celery_run(t.no_leak, kb=64)


@pytest.mark.celery_mode("eager")
@pytest.mark.max_leak_kb(16, task="fixtures.process_*")
def test_eager_task_over_its_limit(celery_run):
    celery_run(t.process_leak, 64)
"""


def test_each_task_is_hunted_where_it_ran(pytester, run):
    pytester.makepyfile(test_inner=INNER)
    out_json = pytester.path / "out.json"
    result = run("-rA", "--hunt-leaks=2:10", f"--memguard-json={out_json}")
    outcomes = outcomes_by_test(result)
    assert outcomes == {
        "test_inner.py::test_worker_tasks": "PASSED",
        "test_inner.py::test_eager_tasks": "PASSED",
        "test_inner.py::test_eager_noop": "PASSED",
        "test_inner.py::test_eager_task_over_its_limit": "FAILED",
    }, result.stdout.str()
    text = result.stdout.str()

    # Worker: the child that ran the task most keeps ~1 MiB per execution (plus its page of bookkeeping).
    worker_leak = re.search(
        r"LEAK ~(\d+\.\d) KB/run over 10 runs \(rss, worker\) task fixtures\.process_leak\(1024\) in worker pid \d+",
        text,
    )
    assert worker_leak is not None, text
    assert 900 <= float(worker_leak.group(1)) <= 1200
    no_leak = r"no leak: ~-?\d+\.\d KB/run over 10 runs \(({}); .*\) task fixtures\.no_leak\(kb={}\)"
    assert re.search(no_leak.format(r"rss, worker", 1024), text)

    # Eager: the heap leak of the task body, named by its line.
    site = f"celery_tasks.py:{process_leak_line()}"
    assert re.search(
        rf"LEAK ~\d+\.\d KB/run over 10 runs \(heap, eager\) task fixtures\.process_leak\(64\), top sites: \S*{site}",
        text,
    ), text
    assert re.search(no_leak.format(r"heap, eager", 64), text)
    result.stdout.fnmatch_lines(
        ["*leak limit exceeded: ~* KB/run over 10 runs (heap, eager) task fixtures.process_leak(64) > max_leak_kb 16*"]
    )

    leaks = {r["nodeid"]: r for r in read_json(out_json)["leaks"]}
    worker_tasks = {t["task"]: t for t in leaks["test_inner.py::test_worker_tasks"]["tasks"]}
    assert worker_tasks["fixtures.process_leak"]["flagged"] is True
    assert worker_tasks["fixtures.process_leak"]["worker"]["rss"]["leaking"] is True
    assert worker_tasks["fixtures.no_leak"]["flagged"] is False
    assert leaks["test_inner.py::test_worker_tasks"]["flagged"] is True  # through its task
    # memguard's own bookkeeping of each re-run's eager records is dropped: a test of non-leaky tasks is clean.
    assert leaks["test_inner.py::test_eager_noop"]["flagged"] is False, leaks["test_inner.py::test_eager_noop"]
    eager_tasks = {t["task"]: t for t in leaks["test_inner.py::test_eager_tasks"]["tasks"]}
    assert eager_tasks["fixtures.process_leak"]["hunt"]["sites"][0]["location"].endswith(site)
    assert eager_tasks["fixtures.no_leak"]["leaking"] is False


def _record(pid: int, start: float, finish: float) -> TaskMemory:
    return TaskMemory("id", "fixtures.process_leak", "SUCCESS", pid=pid, start_mb=start, finish_mb=finish)


def test_the_process_that_ran_most_is_judged_after_its_own_warmup():
    # Two prefork children taking turns: each warms up on its own first executions, then counts.
    records = [_record(1, 10 + i, 11 + i) for i in range(5)] + [_record(2, 50, 50) for _ in range(3)]
    pid, samples, counts = judge_process(records, warmup=1, runs=10)
    assert (pid, counts) == (1, {1: 4, 2: 2})
    assert samples == [int(11 * MB), int(12 * MB), int(13 * MB), int(14 * MB), int(15 * MB)]
