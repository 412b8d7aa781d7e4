"""``memguard compare`` end to end, through the installed command."""

from __future__ import annotations

import json
import subprocess
import sys

from pytest_memguard.baseline import Entry, save_baseline


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_memguard.cli", "compare", *args], capture_output=True, text=True, timeout=60
    )


def _files(tmp_path):
    old = tmp_path / "old.json"
    save_baseline(old, {"t.py::a": Entry(100.0, 1.0, 200.0), "task:proj.add": Entry(5.0, 0.0, 90.0)}, commit=None)
    new = tmp_path / "new.json"
    new.write_text(
        json.dumps(
            {
                "version": 1,
                "tests": [{"nodeid": "t.py::a", "peak_mb": 121.0, "delta_mb": 1.0, "rss_mb": 200.0}],
                "tasks": [{"task_name": "proj.add", "peak_delta_mb": 5.0, "delta_mb": 0.0, "peak_mb": 90.0}],
            }
        )
    )
    return old, new


def test_regression_exits_1_with_the_table(tmp_path):
    old, new = _files(tmp_path)
    done = _run(str(old), str(new))
    assert done.returncode == 1, done.stderr
    assert "t.py::a  peak" in done.stdout and "+21.0MB (+21.0%)" in done.stdout


def test_no_regression_exits_0_in_every_format(tmp_path):
    old, new = _files(tmp_path)
    assert _run(str(old), str(new), "--fail-on", "peak:25%").returncode == 0
    md = _run(str(old), str(old), "--format", "markdown")
    assert md.returncode == 0 and md.stdout.startswith("### ✅ no memory regression")
    js = _run(str(new), str(new), "--format", "json")
    assert js.returncode == 0 and json.loads(js.stdout)["failed"] is False


def test_bad_file_and_bad_spec_exit_2_with_one_line(tmp_path):
    old, _new = _files(tmp_path)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"name": "not ours"}')
    for args, words in (
        ((str(old), str(tmp_path / "missing.json")), "missing.json: no such file"),
        ((str(foreign), str(old)), "foreign.json: not a memguard baseline or results file"),
        ((str(old), str(old), "--fail-on", "lots"), "--fail-on: cannot read 'lots'"),
    ):
        done = _run(*args)
        assert done.returncode == 2
        assert words in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
