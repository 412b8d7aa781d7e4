"""The README's main job: the bundled example suite passes under the plugin and ends in the memory summary, and its
deliberately over-budget example fails only when switched on."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO, SESSION_TIMEOUT_S


def _run_example(*args: str, over_budget: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "PYTEST_"))}
    env["COLUMNS"] = "250"
    if over_budget:
        env["MEMGUARD_DEMO_OVER_BUDGET"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "fixtures/example_suite", "-p", "no:memray", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT_S,
    )


def test_example_suite_passes_and_ends_in_the_memory_summary():
    proc = _run_example()
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    assert "6 passed, 2 skipped" in out
    assert "deliberately over budget: run with --run-over-budget or MEMGUARD_DEMO_OVER_BUDGET=1" in out
    summary = out[out.index("memguard: memory") :]
    assert "celery tasks: 10 execution(s) (2 RETRY prefork, 2 SUCCESS eager, 6 SUCCESS prefork)" in summary
    assert "fixtures.spiky [SUCCESS, prefork] in test_tasks.py::test_spike_is_seen_and_within_budget[worker]" in out


def test_over_budget_example_fails_when_switched_on():
    proc = _run_example("-k", "deliberately", over_budget=True)
    assert proc.returncode == 1, proc.stdout[-4000:]
    for mode in ("eager", "worker"):
        assert f"FAILED fixtures/example_suite/test_tasks.py::test_deliberately_over_budget[{mode}]" in proc.stdout
    assert "memory budget exceeded: task fixtures.spiky [" in proc.stdout
