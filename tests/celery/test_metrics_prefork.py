"""Prometheus metrics from a REAL prefork worker, read the way a /metrics endpoint reads them.

Two children and the worker's main process (which reports killed children) each write prometheus-client's
multiprocess files into ``PROMETHEUS_MULTIPROC_DIR``; a ``MultiProcessCollector`` in the test process must add them
up to exactly what was sent: one histogram observation per execution and per task name, sums equal to the records'
figures (and to the sizes allocated, within the measurement tolerance), one breach per task over ``warn_peak_mb``,
one worker-lost and one suspected-OOM count for the SIGKILLed child.
"""

from __future__ import annotations

import pytest
from billiard.exceptions import WorkerLostError

from pytest_memguard.celery import SUCCESS, WORKER_LOST, task_memories, task_memory

from .conftest import running_worker

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import multiprocess  # noqa: E402

RESULT_TIMEOUT = 60
WARN_PEAK_MB = 100  # a child's RSS at rest is ~40-60 MB: the small tasks stay under it, the big one crosses it
SMALL_MB = [2, 4, 8, 16, 2, 4, 8, 16]  # spiky, spread over both children by their hold time
STEADY_MB = [3, 6, 3, 6]
BIG_MB = 80
KILL_MB = 130  # against a 160 MB limit: near it, hence suspected OOM
TOLERANCE_PER_TASK_MB = 2.0


def _collect(folder) -> prometheus_client.CollectorRegistry:
    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return registry


def test_prefork_worker_metrics_add_up_across_children_and_parent(tmp_path):
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "MEMGUARD_METRICS": "1",
        "MEMGUARD_WARN_PEAK_MB": str(WARN_PEAK_MB),
        "MEMGUARD_WARN_PROCESS_PERCENT": "99",  # only the peak threshold is under test here
        "MEMGUARD_MEMORY_LIMIT": "160MB",
        # A fixed mmap threshold: every buffer is mapped and unmapped, so each task's peak above start is what it
        # allocated. glibc's default threshold grows after a large free, and later buffers then reuse heap pages
        # that are already resident (peak above start ~0: true, but not what this test counts).
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }
    with running_worker(tmp_path, pool="prefork", concurrency=2, env=env) as (app, worker):
        small = [app.send_task("fixtures.spiky", args=(mb, 0.2)) for mb in SMALL_MB]
        steady = [app.send_task("fixtures.steady", args=(mb, 0.1)) for mb in STEADY_MB]
        for r in small + steady:
            r.get(timeout=RESULT_TIMEOUT)
        big = app.send_task("fixtures.spiky", args=(BIG_MB, 0.01))  # alone, once the others are done
        big.get(timeout=RESULT_TIMEOUT)
        killed = app.send_task("fixtures.self_killing", args=(KILL_MB,))
        with pytest.raises(WorkerLostError, match="SIGKILL"):
            killed.get(timeout=RESULT_TIMEOUT)
        spiky_records = task_memories(small + [big], timeout=10)
        steady_records = task_memories(steady, timeout=10)
        lost = task_memory(killed, timeout=10)
        assert worker.alive()
    # The worker (and the replacement child) are stopped: every multiprocess file is complete.
    registry = _collect(prom_dir)

    def value(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert {r.state for r in spiky_records + steady_records} == {SUCCESS}
    assert len({r.pid for r in spiky_records + steady_records}) == 2, "the tasks did not reach both children"
    assert lost.state == WORKER_LOST and lost.suspected_oom is True

    for name, records, sizes in (
        ("fixtures.spiky", spiky_records, SMALL_MB + [BIG_MB]),
        ("fixtures.steady", steady_records, STEADY_MB),
    ):
        for metric in ("peak", "peak_delta", "delta"):
            assert value(f"memguard_task_{metric}_mb_count", task_name=name) == len(sizes), (name, metric)
        peak_delta_sum = value("memguard_task_peak_delta_mb_sum", task_name=name)
        assert peak_delta_sum == pytest.approx(sum(max(r.peak_delta_mb, 0.0) for r in records), abs=1e-6)
        assert abs(peak_delta_sum - sum(sizes)) <= TOLERANCE_PER_TASK_MB * len(sizes), (name, peak_delta_sum)
        assert value("memguard_task_peak_mb_sum", task_name=name) == pytest.approx(
            sum(r.peak_mb for r in records), abs=1e-6
        )
        assert value("memguard_task_delta_mb_sum", task_name=name) == pytest.approx(
            sum(r.delta_mb for r in records), abs=1e-6
        )
        assert value("memguard_task_worker_lost_total", task_name=name) == 0

    over = [r for r in spiky_records if r.peak_mb > WARN_PEAK_MB]
    assert [r.task_id for r in over] == [big.id], [r.summary() for r in spiky_records]
    assert value("memguard_task_threshold_breaches_total", task_name="fixtures.spiky", kind="peak") == 1
    assert value("memguard_task_threshold_breaches_total", task_name="fixtures.steady", kind="peak") == 0

    # The killed child: reported by the worker's main process, from what the child persisted before dying.
    killer = "fixtures.self_killing"
    assert value("memguard_task_worker_lost_total", task_name=killer) == 1
    assert value("memguard_task_suspected_oom_total", task_name=killer) == 1
    assert value("memguard_task_peak_mb_count", task_name=killer) == 1
    assert value("memguard_task_peak_delta_mb_sum", task_name=killer) == pytest.approx(lost.peak_delta_mb, abs=1e-6)
    assert value("memguard_task_threshold_breaches_total", task_name=killer, kind="peak") == 1  # peak > 100 MB
    assert value("memguard_task_delta_mb_count", task_name=killer) == 0  # no finish figure for a killed task
    assert value("memguard_task_threshold_breaches_total", task_name="fixtures.spiky", kind="process_percent") == 0
