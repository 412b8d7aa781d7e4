"""One real session on the embedded broker: eager and worker runs, task budgets (markers and a budgets file) passing
and failing in both modes, the records a test sees, a SIGKILLed task, a worker that dies whole, the JSON and summary.

All of it in one pytester session so the tests share one worker process (start-up is paid once)."""

from __future__ import annotations

from .conftest import outcomes_by_test, read_json

INNER = """
import os
import signal

import pytest

from fixtures import celery_tasks as t


def test_same_test_runs_where_the_option_says(celery_run, celery_mode):
    run = celery_run(t.spiky, 24)
    assert run.value == 24 << 20
    assert run.memory.pool == {"eager": "eager", "worker": "prefork"}[celery_mode]
    assert run.memory.peak_delta_mb > 20


@pytest.mark.celery_mode("eager", "worker")
@pytest.mark.max_peak_mb(100, task="fixtures.spiky")
def test_under_task_budget(celery_run, celery_memory, celery_mode):
    run = celery_run(t.spiky, 24)
    assert celery_memory.get(run.task_id).task_id == run.task_id
    assert [r.task_id for r in celery_memory.by_name("fixtures.sp*")] == [run.task_id]
    assert celery_memory.mode == celery_mode


@pytest.mark.celery_mode("eager", "worker")
@pytest.mark.max_peak_mb(10, task="fixtures.spiky")
def test_over_task_budget(celery_run):
    t.steady.delay(1).get(timeout=60)  # another task, judged on its own record (the file's budget: within it)
    celery_run(t.spiky, 40)


@pytest.mark.celery_mode("eager", "worker")
def test_budget_file_tasks_section(celery_run):
    celery_run(t.steady, 1)    # within the file's 24MB for fixtures.steady
    celery_run(t.steady, 48)   # over it (above glibc's mmap threshold: fresh pages even in a reused process)


@pytest.mark.celery_mode("worker")
def test_every_attempt_is_recorded(celery_run, celery_memory):
    run = celery_run(t.retrying, 2, 1)
    assert run.value == 1 << 20
    states = [(r.attempt, r.state) for r in celery_memory.by_name("fixtures.retrying")]
    assert states == [(0, "RETRY"), (1, "RETRY"), (2, "SUCCESS")]


@pytest.mark.celery_mode("worker")
def test_task_killed_by_sigkill(celery_run):
    celery_run(t.self_killing, 8)


@pytest.mark.celery_mode("worker")
def test_pool_replaced_its_child(celery_run):
    assert celery_run(t.steady, 1).memory.state == "SUCCESS"


@pytest.mark.celery_mode("worker")
def test_worker_dies_whole(celery_memory, memguard_celery_worker):
    result = t.steady.delay(1, 30)
    os.killpg(memguard_celery_worker.worker.pid, signal.SIGKILL)
    memguard_celery_worker.worker.process.wait(30)


@pytest.mark.celery_mode("worker")
def test_next_test_gets_a_new_worker(celery_run, memguard_celery_worker):
    assert memguard_celery_worker.restarts == 1
    assert celery_run(t.steady, 1).memory.pool == "prefork"
"""

BUDGETS = """
[tasks]
"fixtures.steady" = { peak = "24MB" }
"""


def test_embedded_session(run, pytester):
    pytester.makepyfile(test_tasks=INNER)
    pytester.makefile(".toml", budgets=BUDGETS)
    result = run("-rA", "--memguard-json=out.json", "--memory-budget=budgets.toml", "--memguard-celery-timeout=20")
    got = outcomes_by_test(result)
    expected = {
        "test_tasks.py::test_same_test_runs_where_the_option_says": "PASSED",
        "test_tasks.py::test_under_task_budget[eager]": "PASSED",
        "test_tasks.py::test_under_task_budget[worker]": "PASSED",
        "test_tasks.py::test_over_task_budget[eager]": "FAILED",
        "test_tasks.py::test_over_task_budget[worker]": "FAILED",
        "test_tasks.py::test_budget_file_tasks_section[eager]": "FAILED",
        "test_tasks.py::test_budget_file_tasks_section[worker]": "FAILED",
        "test_tasks.py::test_every_attempt_is_recorded": "PASSED",
        "test_tasks.py::test_task_killed_by_sigkill": "FAILED",
        "test_tasks.py::test_pool_replaced_its_child": "PASSED",
        "test_tasks.py::test_worker_dies_whole": "FAILED",
        "test_tasks.py::test_next_test_gets_a_new_worker": "PASSED",
    }
    assert got == expected, result.stdout.str()[-6000:]
    out = result.stdout.str()

    # The failure names the task, its id and its figures; the other task of the test is not judged.
    data = read_json(pytester.path / "out.json")
    tests = {t["nodeid"]: t for t in data["tests"]}
    for mode, pool in (("eager", "eager"), ("worker", "prefork")):
        over = tests[f"test_tasks.py::test_over_task_budget[{mode}]"]
        spiky = [t for t in over["tasks"] if t["task_name"] == "fixtures.spiky"]
        assert len(spiky) == 1 and spiky[0]["pool"] == pool and spiky[0]["state"] == "SUCCESS"
        assert spiky[0]["peak_delta_mb"] > 35
        assert over["exceeded"] == [
            f"memory budget exceeded: task fixtures.spiky [{spiky[0]['task_id']}] peak "
            f"{spiky[0]['peak_delta_mb']:.1f}MB above start > max_peak_mb 10.0MB ({spiky[0]['peak_source']})"
        ]
        steady = [t for t in over["tasks"] if t["task_name"] == "fixtures.steady"]
        assert len(steady) == 1 and steady[0]["exceeded"] == [] and steady[0]["pool"] == pool
        assert [r["limit_mb"] for r in steady[0]["results"]] == [24.0]

        from_file = tests[f"test_tasks.py::test_budget_file_tasks_section[{mode}]"]
        assert [len(t["exceeded"]) for t in from_file["tasks"]] == [0, 1]
        assert all(r["origin"].startswith("budgets file") for t in from_file["tasks"] for r in t["results"])

    # Top-level "tasks" holds every execution of the session, in the TaskMemory naming memguard html reads.
    assert len(data["tasks"]) == sum(len(t["tasks"]) for t in data["tests"])
    retried = [t for t in data["tasks"] if t["task_name"] == "fixtures.retrying"]
    assert [(t["attempt"], t["state"]) for t in retried] == [(0, "RETRY"), (1, "RETRY"), (2, "SUCCESS")]
    assert all(t["peak_mb"] >= t["start_mb"] for t in data["tasks"] if t["peak_mb"] is not None)

    # The SIGKILLed task: its test ends with the WORKER_LOST record in its report and the worker's log.
    killed = tests["test_tasks.py::test_task_killed_by_sigkill"]
    lost = [t for t in killed["tasks"] if t["state"] == "WORKER_LOST"]
    assert len(lost) == 1 and lost[0]["signal"] == "SIGKILL" and lost[0]["checkpoints"][-1]["label"] == "allocated"
    assert any("WORKER_LOST: its worker process was killed by SIGKILL" in line for line in killed["exceeded"])
    result.stdout.fnmatch_lines(
        [
            "*memguard: celery tasks (worker)*",
            f"fixtures.self_killing[[]{lost[0]['task_id']}[]] WORKER_LOST:*signal=SIGKILL*",
            "*memguard: celery worker log*",
            "*Memory [[]fixtures.self_killing[]] checkpoint:allocated*",
        ]
    )
    # A worker that died whole: the test fails saying so, without waiting for the task's 30 s.
    dead = tests["test_tasks.py::test_worker_dies_whole"]
    assert any("has no memory record" in line and "the worker process died" in line for line in dead["exceeded"])

    # The terminal summary lists task executions.
    result.stdout.fnmatch_lines(["*memguard: memory*", "celery tasks: * execution(s) (*WORKER_LOST prefork*)"])
    assert "fixtures.spiky [SUCCESS, eager] in test_tasks.py::test_over_task_budget[eager]  (budget 10.0MB)" in out
