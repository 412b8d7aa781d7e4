"""The pieces on their own: records, stores, the WORKER_LOST verdict, the KiB helper, metrics, the launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from billiard.exceptions import WorkerLostError
from celery import Celery

from pytest_memguard.celery import (
    WORKER_LOST,
    RecordStoreError,
    TaskMemory,
    WorkerStartError,
    max_memory_per_child,
    start_worker_process,
)
from pytest_memguard.celery.inflight import signal_from_exception, worker_lost_record
from pytest_memguard.celery.records import SuccessLines
from pytest_memguard.celery.store import FolderStore, record_key, store_for
from pytest_memguard.runtime.units import SizeError


def sample_record(**changes) -> TaskMemory:
    fields = dict(task_id="abc", task_name="proj.task", state="SUCCESS", start_mb=40.0, peak_mb=90.0, pool="prefork")
    return TaskMemory(**{**fields, **changes})


def test_task_memory_json_round_trip_and_forward_compatibility():
    record = sample_record(checkpoints=[{"label": "x", "time_s": 0.1, "rss_mb": 50.0, "peak_mb": 60.0}])
    assert TaskMemory.from_json(record.to_json()) == record
    newer = {**json.loads(record.to_json()), "field_from_the_future": 1}
    assert TaskMemory.from_dict(newer) == record
    with pytest.raises(ValueError, match="missing state"):
        TaskMemory.from_dict({"task_id": "a", "task_name": "b"})


def test_folder_store_keeps_retries_apart_from_the_final_record(tmp_path):
    store = FolderStore(tmp_path)
    store.write(sample_record(state="RETRY", attempt=0))
    store.write(sample_record(state="SUCCESS", attempt=1))
    assert store.read(record_key("abc", 0)).state == "RETRY"
    assert store.read(record_key("abc")).attempt == 1
    assert store.read(record_key("missing")) is None


def test_backend_without_key_value_api_is_refused_with_the_fix():
    app = Celery("rpc", set_as_current=False, backend="rpc://", broker="memory://")
    with pytest.raises(RecordStoreError, match="memguard_records_dir"):
        store_for(app.backend)


def test_signal_is_read_from_billiards_message():
    assert signal_from_exception(WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")) == "SIGKILL"
    assert signal_from_exception(WorkerLostError("Worker exited prematurely: exitcode 1 Job: 3.")) is None


@pytest.mark.parametrize(
    ("message", "oom_before", "oom_now", "last_rss", "expected"),
    [
        ("signal 9 (SIGKILL)", 0, 1, 50.0, True),  # the cgroup counted an OOM kill
        ("signal 9 (SIGKILL)", None, None, 950.0, True),  # last RSS at 95 % of the limit
        ("signal 9 (SIGKILL)", 0, 0, 50.0, False),
        ("signal 15 (SIGTERM)", 0, 0, 990.0, False),  # not how the OOM killer kills
        ("exitcode 1", 0, 0, 50.0, None),
    ],
)
def test_suspected_oom_verdict(message, oom_before, oom_now, last_rss, expected):
    persisted = {"task_name": "t", "start_mb": 40.0, "peak_mb": last_rss, "last_rss_mb": last_rss, "checkpoints": []}
    record = worker_lost_record(
        "id",
        "t",
        WorkerLostError(f"Worker exited prematurely: {message} Job: 1."),
        persisted,
        oom_kills_before=oom_before,
        oom_kills_now=oom_now,
        limit_mb=1000.0,
        near_percent=90.0,
    )
    assert record.state == WORKER_LOST and record.suspected_oom is expected


def test_worker_lost_without_persisted_state_says_so():
    record = worker_lost_record(
        "id", "t", WorkerLostError("signal 9 (SIGKILL)"), None, oom_kills_before=None, oom_kills_now=None,
        limit_mb=None, near_percent=90.0,
    )  # fmt: skip
    assert record.peak_mb is None and "persisted no state" in record.errors[0]


def test_max_memory_per_child_is_kib_with_strict_units():
    expected = int((4096 - 256) * 0.9 / 4 * 1024)  # MiB -> KiB
    assert max_memory_per_child("4G", 4) == expected
    assert max_memory_per_child("4096M", 4) == expected
    assert max_memory_per_child("4GiB", 4, overhead="256MiB") == expected
    assert max_memory_per_child("512MiB", 1, overhead=0, headroom_percent=0) == 512 * 1024
    with pytest.raises(SizeError, match="unknown unit 'GX'"):
        max_memory_per_child("4GX", 2)
    with pytest.raises(SizeError, match="leaves nothing"):
        max_memory_per_child("200M", 2, overhead="256M")
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        max_memory_per_child("4G", 0)


def test_metrics_record_histograms_and_counters():
    prometheus_client = pytest.importorskip("prometheus_client")
    from pytest_memguard.celery.metrics import TaskMetrics

    registry = prometheus_client.CollectorRegistry()
    metrics = TaskMetrics(warn_peak_mb=80, registry=registry)
    metrics.observe(sample_record(peak_delta_mb=50.0, delta_mb=1.0))
    metrics.observe(sample_record(state=WORKER_LOST, suspected_oom=True))
    value = registry.get_sample_value
    assert value("memguard_task_peak_mb_count", {"task_name": "proj.task"}) == 2
    assert value("memguard_task_threshold_breaches_total", {"task_name": "proj.task", "kind": "peak"}) == 2
    assert value("memguard_task_suspected_oom_total", {"task_name": "proj.task"}) == 1
    assert value("memguard_task_worker_lost_total", {"task_name": "proj.task"}) == 1


def test_worker_that_cannot_start_fails_fast_with_its_log(tmp_path):
    broken = start_worker_process("no_such_module_xyz", pool="solo", ready_timeout=30, log_path=tmp_path / "w.log")
    with pytest.raises(WorkerStartError, match="before it was ready(.|\n)*no_such_module"), broken:
        pass
    with pytest.raises(ValueError, match="pool must be one of"), start_worker_process("fixtures.celery_app", pool="x"):
        pass


def test_the_celery_layer_never_imports_pytest():
    code = "import sys, pytest_memguard.celery, fixtures.celery_app; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_metrics_warn_when_a_prefork_worker_cannot_share_them(tmp_path):
    from pytest_memguard.celery.metrics import multiprocess_problem

    assert "PROMETHEUS_MULTIPROC_DIR is not set" in multiprocess_problem("prefork", environ={})
    assert "not a folder" in multiprocess_problem("prefork", environ={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "x")})
    assert multiprocess_problem("prefork", environ={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) is None
    assert multiprocess_problem("solo", environ={}) is None  # one process: its own registry is complete


def test_batched_writer_turns_a_burst_into_few_writes_and_keeps_every_record():
    from pytest_memguard.celery.delivery import BatchedWriter

    batches = []
    writer = BatchedWriter(batches.append, interval_s=0.05)
    records = [sample_record(task_id=f"t{i}") for i in range(200)]
    for record in records:
        writer.submit(record)
    deadline = time.monotonic() + 10
    while sum(map(len, batches)) < len(records) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.task_id for batch in batches for r in batch] == [r.task_id for r in records]  # all, in order
    assert len(batches) <= 3  # a burst shares a batch (one wake-up), not one write per task
    assert writer.pending() == 0


def test_batched_writer_failure_is_logged_once_and_flush_all_writes_what_is_pending(caplog):
    from pytest_memguard.celery.delivery import BatchedWriter, flush_all

    def broken(batch):
        raise ConnectionError("backend down")

    failing = BatchedWriter(broken, interval_s=600)  # its thread would wait ten minutes: flush_all() writes now
    written = []
    working = BatchedWriter(written.extend, interval_s=600)
    for i in range(3):
        failing.submit(sample_record(task_id=f"f{i}"))
        working.submit(sample_record(task_id=f"w{i}"))
    with caplog.at_level("WARNING", logger="pytest_memguard.celery"):
        assert flush_all() >= 6
        failing.submit(sample_record(task_id="f3"))
        failing.flush()
    assert [r.task_id for r in written] == ["w0", "w1", "w2"]
    warnings = [r.getMessage() for r in caplog.records if "cannot deliver" in r.getMessage()]
    assert warnings == ["memguard: cannot deliver 3 memory record(s) (backend down); tasks are unaffected"]


def test_from_fields_builds_the_same_record_as_the_constructor_and_rejects_a_wrong_field_set():
    record = sample_record(checkpoints=[{"label": "a", "time_s": 0.1, "rss_mb": 1.0, "peak_mb": 1.0}])
    rebuilt = TaskMemory.from_fields(record.as_dict())
    assert rebuilt == record and rebuilt.to_json() == record.to_json()
    with pytest.raises(ValueError, match="needs exactly the fields, in field order"):
        TaskMemory.from_fields({**record.as_dict(), "peak_mbb": 1.0})
    blank = TaskMemory.blank_fields()  # what the worker fills: every field, in order, a fresh dict each time
    assert list(blank) == list(record.as_dict()) and set(blank.values()) == {None}
    blank.update(task_id="b", task_name="n", state="SUCCESS")
    assert TaskMemory.from_fields(blank).task_id == "b" and TaskMemory.blank_fields()["task_id"] is None
    incomplete = record.as_dict()
    del incomplete["pool"]
    with pytest.raises(ValueError, match="needs exactly the fields, in field order"):
        TaskMemory.from_fields(incomplete)


def test_journal_lines_round_trip_in_field_order_and_old_or_foreign_lines_are_told_apart():
    record = sample_record(checkpoints=[{"label": "a", "time_s": 0.1, "rss_mb": 1.0, "peak_mb": 1.0}], attempt=2)
    line = record.to_line()
    assert json.loads(line)[:4] == [2, "abc", "proj.task", "SUCCESS"]  # layout, then values in field order
    assert TaskMemory.from_line(line) == record
    # RSS figures travel as whole KiB when they are (RSS is counted in pages), exactly; others stay floats.
    figures = sample_record(
        start_mb=29.28515625, finish_mb=29.0, peak_mb=30.1, delta_mb=-0.28515625, peak_delta_mb=None
    )
    values = json.loads(figures.to_line())
    assert values[8:13] == [29988, 29696, 30.1, -292, None]
    assert all(type(v) is int for v in values[8:10]) and type(values[10]) is float
    assert TaskMemory.from_line(figures.to_line()) == figures
    limited = sample_record(limit_mb=24105.55078125)
    assert json.loads(limited.to_line())[20] == 24684084 and TaskMemory.from_line(limited.to_line()) == limited
    assert TaskMemory.from_line(record.to_json()) == record  # an object line (older journals) reads too
    # A record whose attributes were re-set out of order still writes its values under the right names.
    shuffled = sample_record()
    del shuffled.pid
    shuffled.pid = 4242
    assert TaskMemory.from_line(shuffled.to_line()).pid == 4242
    # A layout-1 line (journals of an older worker) reads with its own units: KiB, and floats for the rest.
    old = json.loads(line)
    old[0], old[8], old[17] = 1, 40960, 1795873409.7026431
    assert TaskMemory.from_line(json.dumps(old)) == sample_record(
        checkpoints=record.checkpoints, attempt=2, started_at=1795873409.7026431
    )
    with pytest.raises(ValueError, match="known layout"):
        TaskMemory.from_line(json.dumps([99, "abc"]))
    with pytest.raises(ValueError, match="known layout"):
        TaskMemory.from_line(json.dumps([1, "abc", "proj.task"]))
    with pytest.raises(ValueError, match="not a TaskMemory line"):
        TaskMemory.from_line("42")


def test_journal_lines_count_time_and_percent_in_whole_units_only_when_that_reads_back_exactly():
    counted = sample_record(started_at=1795873409.702643, duration_s=0.001263239, process_percent=12.3)
    values = json.loads(counted.to_line())
    assert values[17:19] == [1795873409702643, 1263239] and values[21] == 123  # µs, ns, tenths of a percent
    assert TaskMemory.from_line(counted.to_line()) == counted
    # Finer than the unit, or not a number: written as it is, read back as it was.
    fine = sample_record(started_at=1795873409.7026431, duration_s=0.1234567891234, process_percent=12.34)
    assert json.loads(fine.to_line())[17:22:4] == [1795873409.7026431, 12.34]
    assert TaskMemory.from_line(fine.to_line()) == fine
    odd = sample_record(duration_s=float("inf"), start_mb=40, peak_mb=float("nan"))  # an int MB figure, too
    back = TaskMemory.from_line(odd.to_line())
    assert back.duration_s == float("inf") and back.start_mb == 40.0 and back.peak_mb != back.peak_mb


def test_success_lines_are_the_records_own_journal_line():
    lines = SuccessLines("proj.task", 4242, "w@host", "prefork", "kernel-hwm", {"policy": "growth", "collected": False})
    text = lines.line("t-1", 3, 32524.0, 32660, 40000, 1795873409702643, 1263239, 2, 24683656.0, 17)
    record = TaskMemory(
        task_id="t-1",
        task_name="proj.task",
        state="SUCCESS",
        pid=4242,
        hostname="w@host",
        pool="prefork",
        attempt=3,
        start_mb=32524 / 1024,
        finish_mb=32660 / 1024,
        peak_mb=40000 / 1024,
        delta_mb=136 / 1024,
        peak_delta_mb=7476 / 1024,
        peak_source="kernel-hwm",
        gc={"policy": "growth", "collected": False},
        started_at=1795873409.702643,
        duration_s=0.001263239,
        overlapped=2,
        limit_mb=24683656 / 1024,
        process_percent=1.7,
    )
    assert text == record.to_line()
    assert TaskMemory.from_line(text) == record
    unknown = lines.line('q"uote', 0, 1, 1, 1, 0, 0, 0, None, None)  # JSON-quoted id; an unknown limit is null
    assert TaskMemory.from_line(unknown).task_id == 'q"uote' and json.loads(unknown)[20:22] == [None, None]


def test_folder_store_journals_follow_appends_skip_torn_lines_and_keep_writers_apart(tmp_path):
    writer_a, writer_b, reader = FolderStore(tmp_path), FolderStore(tmp_path), FolderStore(tmp_path)
    writer_a.write_many([sample_record(task_id="a1"), sample_record(task_id="a2", state="RETRY", attempt=0)])
    assert reader.read(record_key("a1")).task_id == "a1"
    assert reader.read(record_key("a2", 0)).state == "RETRY"
    assert reader.read(record_key("b1")) is None
    writer_b.write(sample_record(task_id="b1"))  # appended after the reader's last look: it follows on
    assert reader.read(record_key("b1")).task_id == "b1"
    assert len(list(tmp_path.glob("*.jsonl"))) == 2  # a journal per writer: lines never interleave
    # A process killed mid-write leaves a torn last line in its own journal; it is never taken for a record.
    (tmp_path / "host-99999-1.jsonl").write_bytes(sample_record(task_id="whole").to_line().encode() + b'\n[1, "to')
    assert reader.read(record_key("whole")).task_id == "whole"
    assert reader.read(record_key("to")) is None
    writer_a.write(sample_record(task_id="a3"))
    assert reader.read(record_key("a3")).task_id == "a3"


def test_inflight_slot_is_rewritten_in_place_and_read_back_by_task_id(tmp_path):
    from pytest_memguard.celery import inflight

    folder = str(tmp_path / "inflight")
    running = inflight.InflightFile(folder, {"task_id": "t1", "pid": os.getpid(), "checkpoints": [], "pad": "x" * 300})
    for i in range(3):
        running.on_checkpoint({"label": f"c{i}", "rss_mb": 10.0 + i, "peak_mb": 20.0 + i})
    # The next task in the same process reuses the slot: a shorter state, padded (JSON allows trailing blanks).
    inflight.InflightFile(folder, {"task_id": "t2", "pid": os.getpid(), "checkpoints": []})
    slots = list((tmp_path / "inflight").iterdir())
    assert len(slots) == 1 and slots[0].name.startswith(inflight.SLOT_PREFIX)
    assert json.loads(slots[0].read_bytes())["task_id"] == "t2"
    # A state shorter by more than the padding limit is truncated instead.
    inflight.InflightFile(folder, {"task_id": "big", "pid": os.getpid(), "checkpoints": [], "pad": "x" * 10_000})
    inflight.InflightFile(folder, {"task_id": "t3", "pid": os.getpid(), "checkpoints": []})
    assert slots[0].stat().st_size < 200
    assert inflight.read_inflight(folder, "t1") is None  # finished and overwritten: never mistaken for another
    assert inflight.read_inflight(folder, "t3")["task_id"] == "t3"
    assert slots[0].exists()  # this process is alive: its slot stays
    slots[0].unlink()  # a temp cleaner deleted an idle worker's slot: the next write (after a recheck) restores it
    slot = inflight.slot_for(folder)
    slot.checked_at -= slot.RECHECK_S + 1
    inflight.InflightFile(folder, {"task_id": "t4", "pid": os.getpid(), "checkpoints": []})
    assert inflight.read_inflight(folder, "t4")["task_id"] == "t4"
    inflight.close_slots()
    assert not slots[0].exists()  # a process stopping normally removes it


def test_inflight_state_of_a_killed_child_is_found_and_its_slot_removed(tmp_path):
    import multiprocessing

    from pytest_memguard.celery import inflight

    folder = str(tmp_path / "inflight")
    inflight.InflightFile(folder, {"task_id": "parent-task", "pid": os.getpid(), "checkpoints": []})

    def child() -> None:  # writes its START and a checkpoint, then dies without any clean-up
        # As the worker writes it: figures as whole counts (KiB, µs), the pid left to the slot.
        state = {"task_id": "lost", "checkpoints": [], "start_kib": 40960, "peak_kib": 40960, "started_us": 17958734097}
        inflight.InflightFile(folder, state).on_checkpoint({"label": "allocated", "rss_mb": 90.0, "peak_mb": 95.0})
        os.kill(os.getpid(), signal.SIGKILL)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL
    raw = [json.loads(p.read_bytes()) for p in (tmp_path / "inflight").iterdir()]
    lost = next(state for state in raw if state["task_id"] == "lost")
    assert (lost["pid"], lost["peak_kib"], lost["last_rss_kib"]) == (process.pid, 97280, 92160)  # no float repr
    persisted = inflight.read_inflight(folder, "lost")
    assert persisted["checkpoints"][-1]["label"] == "allocated" and persisted["peak_mb"] == 95.0
    assert (persisted["start_mb"], persisted["last_rss_mb"], persisted["started_at"]) == (40.0, 90.0, 17958.734097)
    names = sorted(p.name for p in (tmp_path / "inflight").iterdir())
    assert len(names) == 1 and f"-{os.getpid()}-" in names[0]  # the dead child's slot is gone, ours (alive) stays
    assert inflight.read_inflight(folder, "parent-task")["task_id"] == "parent-task"  # the child wrote its own slot
    inflight.close_slots()
