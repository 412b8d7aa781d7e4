"""Baseline files on disk: round trip, refusal to clobber bad files, atomicity, concurrent merges."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from pytest_memguard.baseline import (
    BaselineError,
    Entry,
    commit_info,
    load_baseline,
    machine_info,
    merge_into_baseline,
    save_baseline,
)

ENTRIES = {
    "tests/test_x.py::test_a": Entry(peak_mb=52.125, delta_mb=0.25, rss_mb=180.5, runs=3),
    "task:proj.tasks.resize": {"peak_mb": 12.0, "delta_mb": 0.0, "rss_mb": 95.0},
}


def test_round_trip_keeps_entries_machine_and_commit(tmp_path):
    path = tmp_path / ".memguard" / "baseline.json"  # the folder is created
    save_baseline(path, ENTRIES, commit={"id": "abc123", "dirty": True})
    loaded = load_baseline(path)
    assert loaded.entries["tests/test_x.py::test_a"] == Entry(52.125, 0.25, 180.5, kind="test", runs=3)
    assert loaded.entries["task:proj.tasks.resize"].kind == "task"  # from the task: prefix
    assert loaded.commit == {"id": "abc123", "dirty": True}
    assert loaded.machine["cpu_count"] == os.cpu_count()
    assert set(machine_info()) <= set(loaded.machine)
    raw = json.loads(path.read_text())
    assert (raw["version"], raw["kind"]) == (1, "memguard-baseline")
    assert raw["created_at"].endswith("+00:00")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left


def test_commit_comes_from_git_in_a_checkout_and_is_absent_outside(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    inside = commit_info(repo)
    assert len(inside["id"]) == 40 and isinstance(inside["dirty"], bool)
    outside = save_baseline(tmp_path / "b.json", ENTRIES)  # tmp_path is no git checkout
    assert outside.commit is None
    assert "commit" not in json.loads((tmp_path / "b.json").read_text())


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"version": 1, "kind": "memguard-baseline", "entries": {', "corrupt baseline"),
        ('{"kind": "something-else", "version": 1}', "not a memguard baseline"),
        ("[1, 2, 3]", "not a memguard baseline"),
        ('{"version": 99, "kind": "memguard-baseline", "entries": {}}', "version 99"),
        ('{"version": 1, "kind": "memguard-baseline", "entries": {"t": {"peak_mb": "x"}}}', "peak_mb"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_bad_file_is_reported_in_one_line_and_never_overwritten(tmp_path, content, words):
    path = tmp_path / "baseline.json"
    data = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(data)
    for action in (
        lambda: load_baseline(path),
        lambda: save_baseline(path, ENTRIES, commit=None),
        lambda: merge_into_baseline(path, ENTRIES, commit=None),
    ):
        with pytest.raises(BaselineError) as info:
            action()
        message = str(info.value)
        assert str(path) in message and words in message and "\n" not in message
    assert path.read_bytes() == data


def test_missing_baseline_says_how_to_create_one(tmp_path):
    with pytest.raises(BaselineError, match="--memory-baseline-save"):
        load_baseline(tmp_path / "none.json")


def test_merge_keeps_other_entries_and_replaces_same_names(tmp_path):
    path = tmp_path / "b.json"
    merge_into_baseline(path, {"a": Entry(1, 1, 1), "b": Entry(2, 2, 2)}, commit=None)
    merge_into_baseline(path, {"b": Entry(3, 3, 3), "c": Entry(4, 4, 4)}, commit=None)
    entries = load_baseline(path).entries
    assert {name: e.peak_mb for name, e in entries.items()} == {"a": 1, "b": 3, "c": 4}


def _writer(path: str, worker: int, count: int) -> None:
    for i in range(count):
        merge_into_baseline(path, {f"w{worker}::test_{i}": Entry(float(i), 0.0, float(worker))}, commit=None)


def _reader(path: str, stop, errors) -> None:
    while not stop.is_set():
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except FileNotFoundError:
            continue
        except Exception as exc:  # a torn read would show up here
            errors.put(repr(exc))


def test_four_concurrent_writers_lose_no_entry_and_readers_never_see_a_torn_file(tmp_path):
    path = str(tmp_path / "merged.json")
    ctx = multiprocessing.get_context("fork")
    stop, errors = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(path, stop, errors))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    stop.set()
    reader.join(10)
    entries = load_baseline(path).entries
    assert len(entries) == 200
    assert all(f"w{w}::test_{i}" in entries for w in range(4) for i in range(50))
    assert entries["w3::test_49"] == Entry(49.0, 0.0, 3.0)
    assert errors.empty()
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
