"""Records from REAL worker processes: prefork/solo/threads pools, embedded broker, Redis and RabbitMQ."""

from __future__ import annotations

import pytest
from billiard.exceptions import WorkerLostError

from pytest_memguard.celery import (
    FAILURE,
    RETRY,
    SUCCESS,
    WORKER_LOST,
    TaskMemoryTimeout,
    collect_task_memories,
    task_memories,
    task_memory,
)
from pytest_memguard.runtime.probes import PEAK_SOURCE_KERNEL, get_probe

from .conftest import running_worker

RESULT_TIMEOUT = 60
KERNEL_MARK = get_probe().hwm_usable


def test_spiky_task_peak_above_start_matches_its_allocation_in_a_prefork_child(embedded_prefork):
    app, worker = embedded_prefork
    result = app.send_task("fixtures.spiky", args=(64,))
    assert result.get(timeout=RESULT_TIMEOUT) == 64 << 20  # the return value is the task's, untouched
    mem = task_memory(result, timeout=10)
    assert mem.state == SUCCESS
    assert mem.pool == "prefork"
    assert mem.pid != worker.pid  # measured in the child, not the worker's main process
    assert mem.task_name == "fixtures.spiky"
    if KERNEL_MARK:
        assert mem.peak_source == PEAK_SOURCE_KERNEL
    assert abs(mem.peak_delta_mb - 64) <= 2, mem
    assert mem.delta_mb < 8  # freed before returning
    assert mem.start_mb > 0 and mem.peak_mb >= mem.start_mb + 62


@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_checkpoints_reach_the_task_monitor_in_every_pool(tmp_path, pool):
    with running_worker(tmp_path, pool=pool, concurrency=2 if pool == "threads" else 1) as (app, worker):
        result = app.send_task("fixtures.process_document", kwargs={"n_words": 100_000})
        assert result.get(timeout=RESULT_TIMEOUT)["chunks"] == 200
        mem = task_memory(result, timeout=10)
        log = worker.log_text()
    assert mem.pool == pool
    # self.memory_checkpoint() and the free pytest_memguard.checkpoint() from library code, in order:
    assert [c["label"] for c in mem.checkpoints] == ["after_generate", "after_chunking", "after_embedding"]
    assert all(c["rss_mb"] > 0 for c in mem.checkpoints)
    for line in ("START", "checkpoint:after_chunking", "FINISH (delta="):
        assert f"Memory [fixtures.process_document] {line}" in log
    assert f"[task_id={result.id}]" in log


def test_threads_pool_records_say_how_many_tasks_overlapped(tmp_path):
    with running_worker(tmp_path, pool="threads", concurrency=2) as (app, _worker):
        results = [app.send_task("fixtures.steady", args=(4, 1.0)) for _ in range(2)]
        for r in results:
            r.get(timeout=RESULT_TIMEOUT)
        records = [task_memory(r, timeout=10) for r in results]
    assert {r.pool for r in records} == {"threads"}
    assert {r.task_id for r in records} == {r.id for r in results}  # per-task state, not shared
    assert max(r.overlapped for r in records) >= 1, [r.summary() for r in records]


def test_failure_and_three_retries_give_full_records(embedded_prefork):
    app, _worker = embedded_prefork
    failed = app.send_task("fixtures.failing", args=(4,))
    with pytest.raises(Exception, match="failed while holding 4 MiB"):
        failed.get(timeout=RESULT_TIMEOUT)
    retried = app.send_task("fixtures.retrying", args=(3, 1))
    assert retried.get(timeout=RESULT_TIMEOUT) == 1 << 20

    failure = task_memory(failed, timeout=10)
    assert failure.state == FAILURE
    assert "ProcessingError" in failure.exception
    assert failure.peak_delta_mb >= 3
    assert failure.gc["collected"] is True and failure.gc["objects_collected"] > 0  # the failed frames' cycles

    records = task_memories([retried], timeout=10)
    assert [(r.attempt, r.state) for r in records] == [(0, RETRY), (1, RETRY), (2, RETRY), (3, SUCCESS)]
    for record in records:
        assert record.checkpoints[0]["label"] == f"attempt_{record.attempt}"
        assert record.peak_mb is not None and record.duration_s > 0
    assert all("attempt" in r.exception for r in records[:3])
    assert all(r.gc["collected"] for r in records[:3])


def test_sigkilled_child_gives_worker_lost_with_last_checkpoint_and_suspected_oom(tmp_path):
    # A limit the container does not impose, so "near the limit" can be reached for real without hurting the host.
    with running_worker(tmp_path, pool="prefork", env={"MEMGUARD_MEMORY_LIMIT": "160MB"}) as (app, worker):
        big = app.send_task("fixtures.self_killing", args=(130,))
        with pytest.raises(WorkerLostError, match="SIGKILL"):
            big.get(timeout=RESULT_TIMEOUT)
        small = app.send_task("fixtures.self_killing", args=(1,))
        with pytest.raises(WorkerLostError):
            small.get(timeout=RESULT_TIMEOUT)
        lost_big = task_memory(big, timeout=10)
        lost_small = task_memory(small, timeout=10)
        assert worker.alive()  # the pool replaced its child
    assert lost_big.state == WORKER_LOST and lost_big.signal == "SIGKILL"
    assert lost_big.checkpoints[-1]["label"] == "allocated"
    assert lost_big.peak_delta_mb >= 125
    assert lost_big.limit_mb == 160
    assert lost_big.suspected_oom is True
    assert lost_small.state == WORKER_LOST and lost_small.signal == "SIGKILL"
    assert lost_small.suspected_oom is False  # killed, but nowhere near the limit
    assert lost_small.finish_mb is None


def test_collector_gathers_children_and_retries_sent_inside_it(embedded_prefork):
    app, _worker = embedded_prefork
    with collect_task_memories(app) as run:
        parent = app.send_task("fixtures.fan_out", args=(2, 1))
        child_ids = parent.get(timeout=RESULT_TIMEOUT)
        app.send_task("fixtures.retrying", args=(1, 1)).get(timeout=RESULT_TIMEOUT)
        for child_id in child_ids:
            app.AsyncResult(child_id).get(timeout=RESULT_TIMEOUT)
    records = run.records(timeout=10)
    names = sorted((r.task_name, r.attempt) for r in records)
    assert names == [
        ("fixtures.fan_out", 0),
        ("fixtures.retrying", 0),
        ("fixtures.retrying", 1),
        ("fixtures.steady", 0),
        ("fixtures.steady", 0),
    ]
    assert {r.run_tag for r in records} == {run.run_tag}  # carried to children and retries by the worker
    assert sorted(next(r for r in records if r.task_name == "fixtures.fan_out").children) == sorted(child_ids)


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_records_travel_through_redis_and_rabbitmq(tmp_path, kind):
    with running_worker(tmp_path, kind=kind, pool="prefork") as (app, _worker):
        spiky = app.send_task("fixtures.spiky", args=(32,))
        failing = app.send_task("fixtures.failing", args=(1,))
        spiky.get(timeout=RESULT_TIMEOUT)
        with pytest.raises(Exception, match="failed while holding"):
            failing.get(timeout=RESULT_TIMEOUT)
        mem = task_memory(spiky, timeout=10)
        failure = task_memory(failing, timeout=10)
    assert mem.state == SUCCESS and abs(mem.peak_delta_mb - 32) <= 2, mem
    assert failure.state == FAILURE


def test_embedded_broker_soak_loses_nothing(tmp_path):
    """A smaller version of benchmarks/bench_celery_soak.py (2000 tasks): a backlog drained by two children."""
    n = 300
    with running_worker(tmp_path, pool="prefork", concurrency=2, env={"MEMGUARD_LOG_LEVEL": "DEBUG"}) as (app, w):
        results = [app.send_task("fixtures.noop") for _ in range(n)]
        for r in results:
            r.get(timeout=RESULT_TIMEOUT, interval=0.01)
        records = task_memories(results, timeout=30)
        log = w.log_text()
    assert [r.state for r in records] == [SUCCESS] * n
    assert {r.task_id for r in records} == {r.id for r in results}
    assert "Unrecoverable" not in log and "JSONDecodeError" not in log


@pytest.mark.services
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_batched_records_still_pending_are_written_when_the_worker_stops(tmp_path, pool):
    # Batching applies where a write is a round trip (Redis). A batch interval of ten minutes: only the shutdown
    # flush (worker_shutdown / worker_process_shutdown) can have written these records.
    env = {"MEMGUARD_RECORDS_FLUSH_MS": "600000"}
    with running_worker(tmp_path, kind="redis", pool=pool, env=env) as (app, worker):
        results = [app.send_task("fixtures.noop") for _ in range(5)]
        for result in results:
            result.get(timeout=RESULT_TIMEOUT)
        with pytest.raises(TaskMemoryTimeout):
            task_memory(results[-1], timeout=0.5)  # held by the worker's writer, not yet in the backend
        assert worker.stop(timeout=30) == 0
        records = task_memories(results, timeout=10, app=app, children=False)
    assert sorted(r.task_id for r in records) == sorted(r.id for r in results)
    assert {r.pool for r in records} == {pool}


def test_embedded_journals_are_written_in_task_postrun_whatever_the_batch_interval(tmp_path):
    # A journal append is cheaper inline than handed to a writer thread, so the batch interval does not apply to
    # it: with ten minutes of it, every record is still readable while the worker runs.
    with running_worker(tmp_path, pool="solo", env={"MEMGUARD_RECORDS_FLUSH_MS": "600000"}) as (app, _worker):
        results = [app.send_task("fixtures.noop") for _ in range(3)]
        mems = task_memories(results, timeout=RESULT_TIMEOUT, app=app, children=False)
    assert [m.task_id for m in mems] == [r.id for r in results]
    assert [m.state for m in mems] == [SUCCESS] * 3


@pytest.mark.services
def test_records_are_written_inline_when_batching_is_off(tmp_path):
    # records_flush_ms=0: with Redis too, each record is written in task_postrun itself (one round trip per task).
    env = {"MEMGUARD_RECORDS_FLUSH_MS": "0"}
    with running_worker(tmp_path, kind="redis", pool="solo", env=env) as (app, _worker):
        results = [app.send_task("fixtures.spiky", args=(16,))] + [app.send_task("fixtures.noop") for _ in range(2)]
        mems = task_memories(results, timeout=RESULT_TIMEOUT, app=app, children=False)
    assert [m.task_id for m in mems] == [r.id for r in results]
    assert [m.state for m in mems] == [SUCCESS] * 3
    assert abs(mems[0].peak_delta_mb - 16) <= 2, mems[0]
