"""Real sessions under ``pytest -n 2``: every xdist worker runs its own Celery worker on its own broker folder (or
Redis queue), and the tasks of a test run on its xdist worker's Celery worker only. Plus: the mode option turns
every unmarked test into a worker-mode test."""

from __future__ import annotations

from tests.services import require_redis

from .conftest import outcomes_by_test, read_json

INNER = """
import os

import pytest

from fixtures import celery_tasks as t


@pytest.mark.parametrize("i", range(4))
def test_runs_on_its_own_workers_worker(i, celery_run, celery_mode, memguard_celery_worker):
    assert celery_mode == "worker"  # from --memguard-celery-mode=worker
    run = celery_run(t.steady, 2)
    xdist_worker = os.environ["PYTEST_XDIST_WORKER"]
    assert memguard_celery_worker.queue.startswith(f"memguard-{xdist_worker}-")
    assert run.memory.hostname.startswith(f"{memguard_celery_worker.queue}-w")
    assert run.memory.pool == "prefork"
    print(f"MEMGUARD-QUEUE {xdist_worker} {memguard_celery_worker.queue}")


@pytest.mark.max_peak_mb(8, task="fixtures.spiky")
def test_over_budget_on_a_worker(celery_run):
    celery_run(t.spiky, 40)
"""


def _check(result, pytester) -> None:
    got = outcomes_by_test(result)
    assert got == {
        **{f"test_tasks.py::test_runs_on_its_own_workers_worker[{i}]": "PASSED" for i in range(4)},
        "test_tasks.py::test_over_budget_on_a_worker": "FAILED",
    }, result.stdout.str()[-5000:]
    queues = {line.split()[1]: line.split()[2] for line in result.outlines if line.startswith("MEMGUARD-QUEUE ")}
    data = read_json(pytester.path / "out.json")
    # the controller merged both xdist workers' task records into one file
    workers = {t["worker"] for t in data["tests"]}
    assert workers == {"gw0", "gw1"}, workers
    assert len(data["tasks"]) == 5
    over = next(t for t in data["tests"] if t["nodeid"].endswith("test_over_budget_on_a_worker"))
    assert over["tasks"][0]["hostname"].startswith(f"memguard-{over['worker']}-")
    assert over["exceeded"][0].startswith("memory budget exceeded: task fixtures.spiky [")
    assert set(queues) == {"gw0", "gw1"} and len(set(queues.values())) == 2, queues  # no shared queue


def test_xdist_embedded_broker(run, pytester):
    pytester.makepyfile(test_tasks=INNER)
    result = run(
        "-n", "2", "-rA", "--memguard-celery-mode=worker", "--memguard-celery-concurrency=1", "--memguard-json=out.json"
    )
    _check(result, pytester)


def test_xdist_redis_broker(run, pytester):
    broker, backend = require_redis(7), require_redis(8)
    pytester.makepyfile(test_tasks=INNER)
    result = run(
        "-n",
        "2",
        "-rA",
        "--memguard-celery-mode=worker",
        "--memguard-celery-concurrency=1",
        f"--memguard-celery-broker={broker}",
        f"--memguard-celery-backend={backend}",
        "--memguard-json=out.json",
    )
    _check(result, pytester)
    result.stdout.fnmatch_lines(
        [f"*memguard celery: app fixtures.celery_app:app; default mode worker; worker: {broker}*"]
    )
