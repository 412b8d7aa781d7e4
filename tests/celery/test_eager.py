"""In-process execution (``apply()``, ``task_always_eager``): records, checkpoints, GC policy, options."""

from __future__ import annotations

import gc
import mmap
import threading
import uuid

import pytest
from celery import Celery

import pytest_memguard
from pytest_memguard.celery import (
    FAILURE,
    RETRY,
    SUCCESS,
    MonitoredTask,
    TaskMemoryTimeout,
    collect_task_memories,
    instrument,
    instrumentation,
    task_memories,
    task_memory,
    uninstrument,
)
from pytest_memguard.celery.lifecycle import suspended
from pytest_memguard.runtime.config import SettingError

MB = 1 << 20


def library_phase(label: str) -> None:
    """Library code that knows nothing about Celery."""
    pytest_memguard.checkpoint(label)


@pytest.fixture
def app():
    app = Celery(f"eager-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(broker_url="memory://", result_backend="cache+memory://")

    @app.task(name=f"{app.main}.alloc", bind=True, base=MonitoredTask)
    def alloc(self, mb):
        # Fresh pages, touched: a bytearray may reuse heap memory earlier tests freed (run after tests/cli, an 8 MB
        # bytearray measured 0.2-0.4 MB of peak), so its figure depended on what ran before.
        buf = mmap.mmap(-1, mb * MB)
        for offset in range(0, mb * MB, mmap.PAGESIZE):
            buf[offset] = 1
        self.memory_checkpoint("allocated")
        library_phase("library")
        size = len(buf)
        buf.close()
        return size

    @app.task(name=f"{app.main}.fail")
    def fail(mb):
        held = bytearray(mb * MB)  # noqa: F841 - kept alive by the traceback's frame
        raise KeyError("boom")

    @app.task(name=f"{app.main}.retry", bind=True, max_retries=5)
    def retry(self, times):
        pytest_memguard.checkpoint(f"attempt_{self.request.retries}")
        if self.request.retries < times:
            raise self.retry(exc=ValueError(f"attempt {self.request.retries}"), countdown=0)
        return "done"

    @app.task(name=f"{app.main}.cycle")
    def cycle(mb):
        node = {"payload": bytearray(mb * MB)}
        node["self"] = node

    instrument(app)
    yield app
    uninstrument(app)


def test_apply_delivers_a_record_without_touching_the_return_value(app):
    result = app.tasks[f"{app.main}.alloc"].apply(args=(8,))
    assert result.get() == 8 * MB
    mem = task_memory(result, timeout=1)
    assert mem.state == SUCCESS and mem.pool == "eager" and mem.task_id == result.id
    assert [c["label"] for c in mem.checkpoints] == ["allocated", "library"]
    assert mem.peak_delta_mb >= 7
    assert mem.to_json() and type(mem).from_json(mem.to_json()) == mem


def test_task_always_eager(app):
    app.conf.task_always_eager = True
    result = app.tasks[f"{app.main}.alloc"].delay(2)
    assert task_memory(result, timeout=1).state == SUCCESS


def test_failure_record_and_gc_after_failure(app):
    # Python's own collector must not get to the failed task's garbage first (whether it runs in between depends on
    # allocation counts, i.e. on which tests ran before): the figure checked is what memguard's collection freed.
    gc.disable()
    try:
        result = app.tasks[f"{app.main}.fail"].apply(args=(4,))
    finally:
        gc.enable()
    assert result.failed()
    mem = task_memory(result, timeout=1)
    assert mem.state == FAILURE and mem.exception.startswith("KeyError")
    assert mem.gc["policy"] == "always" and mem.gc["objects_collected"] > 0


def test_three_retries_give_three_retry_records_and_the_final(app):
    result = app.tasks[f"{app.main}.retry"].apply(args=(3,))
    assert result.get() == "done"
    records = task_memories(result, timeout=1)
    assert [(r.attempt, r.state) for r in records] == [(0, RETRY), (1, RETRY), (2, RETRY), (3, SUCCESS)]
    assert [r.checkpoints[0]["label"] for r in records] == [f"attempt_{n}" for n in range(4)]


def test_cyclic_garbage_shows_in_every_record_under_gc_always(app):
    instrument(app, gc_policy="always")
    records = [task_memory(app.tasks[f"{app.main}.cycle"].apply(args=(1,)), timeout=1) for _ in range(3)]
    assert all(r.gc["collected"] and r.gc["objects_collected"] >= 1 for r in records)


def test_default_gc_policy_is_growth_and_cheap(app):
    mem = task_memory(app.tasks[f"{app.main}.alloc"].apply(args=(1,)), timeout=1)
    assert mem.gc["policy"] == "growth"


def test_concurrent_executions_keep_their_own_state(app):
    results = []
    lock = threading.Lock()

    def run(mb):
        r = app.tasks[f"{app.main}.alloc"].apply(args=(mb,))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run, args=(mb,)) for mb in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    records = [task_memory(r, timeout=1) for r in results]
    assert len({r.task_id for r in records}) == 4
    assert all([c["label"] for c in r.checkpoints] == ["allocated", "library"] for r in records)


def test_collector_gathers_eager_records_with_its_run_tag(app):
    with collect_task_memories(app) as run:
        app.tasks[f"{app.main}.alloc"].apply(args=(1,))
        app.tasks[f"{app.main}.retry"].apply(args=(1,))
    app.tasks[f"{app.main}.alloc"].apply(args=(1,))  # after the block: not collected
    records = run.records(timeout=1)
    names = [(r.task_name.rsplit(".", 1)[1], r.state) for r in records]
    assert names == [("alloc", SUCCESS), ("retry", RETRY), ("retry", SUCCESS)]
    assert {r.run_tag for r in records} == {run.run_tag}


def test_task_memory_times_out_with_a_clear_message(app):
    with pytest.raises(TaskMemoryTimeout, match="instrument\\(app\\)"):
        task_memory(app.AsyncResult(str(uuid.uuid4())), timeout=0.05)


def test_uninstrument_stops_measuring_and_instrument_is_idempotent(app):
    fail = app.tasks[f"{app.main}.fail"]  # finalizes the app first: binding a MonitoredTask instruments its app
    assert instrument(app) is instrumentation(app)
    cycle = app.tasks[f"{app.main}.cycle"]
    assert task_memory(cycle.apply(args=(0,)), timeout=1).gc["policy"] == "growth"  # measured (and looked up)
    replaced = instrument(app, gc_policy="never")  # new options: the new instrumentation measures from now on
    assert task_memory(cycle.apply(args=(0,)), timeout=1).gc["policy"] == "never"
    with suspended(app):
        paused = cycle.apply(args=(0,))
    assert task_memory(cycle.apply(args=(0,)), timeout=1).gc["policy"] == "never"
    with pytest.raises(TaskMemoryTimeout):
        task_memory(paused, timeout=0.05)
    assert instrumentation(app) is replaced
    assert uninstrument(app) is True
    assert uninstrument(app) is False
    result = fail.apply(args=(1,))
    with pytest.raises(TaskMemoryTimeout):
        task_memory(result, timeout=0.05)
    instrument(app)


def test_monitored_task_instruments_its_app_when_bound():
    app = Celery(f"auto-{uuid.uuid4().hex[:6]}", set_as_current=False)

    @app.task(name="t.auto", base=MonitoredTask, bind=True)
    def auto(self):
        return self.memory_checkpoint("inside")["label"]

    try:
        result = auto.apply()
        assert result.get() == "inside"
        assert task_memory(result, timeout=1).checkpoints[0]["label"] == "inside"
    finally:
        uninstrument(app)


def test_options_precedence_arguments_over_app_conf_over_environment(app, monkeypatch):
    monkeypatch.setenv("MEMGUARD_WARN_PEAK_MB", "100")
    monkeypatch.setenv("MEMGUARD_OOM_NEAR_PERCENT", "70")
    app.conf.memguard_warn_peak_mb = 200
    app.conf.memguard_memory_limit = "2GiB"
    instr = instrument(app, warn_peak_mb=300)
    assert instr.settings.warn_peak_mb == 300
    assert instr.options.memory_limit == 2 << 30
    assert instr.options.oom_near_percent == 70
    assert uninstrument(app)
    assert instrument(app).settings.warn_peak_mb == 200


def test_bad_options_name_the_problem(app):
    with pytest.raises(SettingError, match="unknown memguard option.*gc_polcy"):
        instrument(app, gc_polcy="always")
    app.conf.memguard_memory_limit = "lots"
    with pytest.raises(SettingError, match="memory_limit.*cannot read 'lots'"):
        instrument(app, warn_peak_mb=1)


def test_failure_and_retry_log_lines_follow_the_seed_format(app, caplog):
    caplog.set_level("INFO", logger="pytest_memguard")
    result = app.tasks[f"{app.main}.fail"].apply(args=(1,))
    text = caplog.text
    assert f"Memory [{app.main}.fail] START: RSS=" in text
    assert f"Memory [{app.main}.fail] FAILURE (delta=" in text and f"[task_id={result.id}]" in text


def test_a_worker_process_keeps_no_local_copy_of_records_it_sends_to_the_backend(tmp_path):
    """Through Celery's own worker-side tracer (not eager): the record goes to the backend, and this process keeps
    none of its own unless a collector here listens."""
    from celery.app.trace import build_tracer

    from pytest_memguard.celery import embedded_app_config, lifecycle
    from pytest_memguard.celery.delivery import flush_all
    from pytest_memguard.celery.store import local_records

    worker_app = Celery(f"worker-{uuid.uuid4().hex[:6]}", set_as_current=False)
    worker_app.conf.update(embedded_app_config(str(tmp_path / "embedded")))

    @worker_app.task(name="noop")
    def noop():
        return None

    instrument(worker_app)
    tracer = build_tracer("noop", noop, app=worker_app, eager=False)
    request = {"hostname": "w@test", "delivery_info": {"routing_key": "celery"}, "is_eager": False}
    saved_pool = lifecycle._worker["pool"]
    lifecycle._worker["pool"] = "solo"
    try:
        ids = [uuid.uuid4().hex for _ in range(3)]
        tracer(ids[0], (), {}, {**request, "id": ids[0]})
        with collect_task_memories(worker_app):  # a listener in this process: it gets its record locally
            tracer(ids[1], (), {}, {**request, "id": ids[1]})
        tracer(ids[2], (), {}, {**request, "id": ids[2]})
        flush_all()
    finally:
        lifecycle._worker["pool"] = saved_pool
        uninstrument(worker_app)
    assert [local_records.final(i) is not None for i in ids] == [False, True, False]
    assert [task_memory(i, timeout=5, app=worker_app).pool for i in ids] == ["solo"] * 3  # all in the backend

    # With records off (memguard_records=False) nothing is sent, and nothing piles up in the worker either:
    # 10,000 retained records would be ~11 MB of memguard's own in every worker process.
    instrument(worker_app, records=False)
    lifecycle._worker["pool"] = "solo"
    try:
        unsent = uuid.uuid4().hex
        tracer(unsent, (), {}, {**request, "id": unsent})
        eager = noop.apply()  # eager runs are read from this process's registry: they stay
    finally:
        lifecycle._worker["pool"] = saved_pool
        uninstrument(worker_app)
    assert local_records.final(unsent) is None
    assert local_records.final(eager.id) is not None


def test_a_record_the_store_cannot_take_stays_readable_here_and_reaches_a_listener_once(tmp_path, caplog):
    """A real delivery fault: records_dir names a file, so no journal folder can be made there."""
    from celery.app.trace import build_tracer

    from pytest_memguard.celery import embedded_app_config, lifecycle
    from pytest_memguard.celery.store import local_records

    not_a_folder = tmp_path / "records-file"
    not_a_folder.write_text("in the way")
    worker_app = Celery(f"worker-{uuid.uuid4().hex[:6]}", set_as_current=False)
    worker_app.conf.update(embedded_app_config(str(tmp_path / "embedded")))

    @worker_app.task(name="undeliverable_noop")
    def noop():
        return None

    instrument(worker_app, records_dir=str(not_a_folder))
    tracer = build_tracer("undeliverable_noop", noop, app=worker_app, eager=False)
    request = {"hostname": "w@test", "delivery_info": {"routing_key": "celery"}, "is_eager": False}
    heard: list[str] = []
    saved_pool = lifecycle._worker["pool"]
    lifecycle._worker["pool"] = "solo"
    try:
        alone, listened = uuid.uuid4().hex, uuid.uuid4().hex
        tracer(alone, (), {}, {**request, "id": alone})

        def listener(record) -> None:
            heard.append(record.task_id)

        local_records.subscribe(listener)
        try:
            tracer(listened, (), {}, {**request, "id": listened})
        finally:
            local_records.unsubscribe(listener)
    finally:
        lifecycle._worker["pool"] = saved_pool
        uninstrument(worker_app)
    assert local_records.final(alone) is not None  # undeliverable, but still readable in this process
    assert heard == [listened]  # the listener got it once, not again from the fallback
    assert any("cannot deliver memory records" in r.getMessage() for r in caplog.records)


def test_a_workers_plain_success_is_journaled_as_the_same_line_its_whole_record_would_make(tmp_path, monkeypatch):
    """The worker's short path for a plain SUCCESS (its line formatted from the figures, no TaskMemory built) writes
    exactly what the record's own ``to_line`` would; anything more (a checkpoint, a failure) takes the whole path."""
    import json
    import os
    import time

    from celery.app.trace import build_tracer

    from pytest_memguard.celery import TaskMemory, embedded_app_config, lifecycle
    from pytest_memguard.celery.store import FolderStore, local_records, record_key
    from pytest_memguard.runtime import probes

    records = tmp_path / "records"
    worker_app = Celery(f"worker-{uuid.uuid4().hex[:6]}", set_as_current=False)
    worker_app.conf.update(embedded_app_config(str(tmp_path / "embedded")))

    @worker_app.task(name="plain")
    def plain():
        return bytearray(4 * MB)[0]

    @worker_app.task(name="phased")
    def phased():
        pytest_memguard.checkpoint("half")

    @worker_app.task(name="broken")
    def broken():
        raise ValueError("no")

    instr = instrument(worker_app, records_dir=str(records))
    request = {"hostname": "w@test", "delivery_info": {"routing_key": "celery"}, "is_eager": False}
    saved_pool = lifecycle._worker["pool"]
    lifecycle._worker["pool"] = "solo"
    before = time.time()
    try:
        ids = {}
        for task in (plain, plain, phased, broken):
            ids.setdefault(task.name, []).append(uuid.uuid4().hex)
            tracer = build_tracer(task.name, task, app=worker_app, eager=False)
            tracer(ids[task.name][-1], (), {}, {**request, "id": ids[task.name][-1]})
        with monkeypatch.context() as patch:  # a fault in the monitor: the whole record says so, still journaled

            def statm_gone(self):
                raise OSError("statm vanished")

            patch.setattr(probes.ProcessProbe, "rss_bytes", statm_gone)
            faulty = uuid.uuid4().hex
            build_tracer("plain", plain, app=worker_app, eager=False)(faulty, (), {}, {**request, "id": faulty})
        eager = plain.apply()  # in the same process after worker runs: an eager record stays here, unjournaled
    finally:
        lifecycle._worker["pool"] = saved_pool
        uninstrument(worker_app)
    assert set(instr._success_lines) == {"plain"}  # the short path served the plain successes, and only them
    lines = [line for journal in records.glob("*.jsonl") for line in journal.read_text().splitlines()]
    by_id = {json.loads(line)[1]: line for line in lines}
    assert set(by_id) == {*ids["plain"], *ids["phased"], *ids["broken"], faulty}
    assert local_records.final(eager.id).pool == "eager"
    faulted = TaskMemory.from_line(by_id[faulty])
    assert faulted.state == SUCCESS and faulted.errors and faulted.finish_mb is None
    for task_id in ids["plain"]:
        line = by_id[task_id]
        mem = TaskMemory.from_line(line)
        assert mem.to_line() == line  # byte for byte what the whole record writes
        assert (mem.task_name, mem.state, mem.pid, mem.hostname, mem.pool) == (
            "plain",
            SUCCESS,
            os.getpid(),
            "w@test",
            "solo",
        )
        assert before <= mem.started_at <= time.time() and 0 < mem.duration_s < 5
        assert mem.peak_mb >= mem.start_mb > 0 and mem.finish_mb > 0
        assert mem.delta_mb == mem.finish_mb - mem.start_mb and mem.peak_delta_mb == mem.peak_mb - mem.start_mb
    assert [c["label"] for c in TaskMemory.from_line(by_id[ids["phased"][0]]).checkpoints] == ["half"]
    failed = TaskMemory.from_line(by_id[ids["broken"][0]])
    assert failed.state == FAILURE and failed.exception == "ValueError: no"
    assert FolderStore(records).read(record_key(ids["plain"][0])).task_name == "plain"  # what callers read
