"""Helpers for the Celery-fixture tests: real pytest sessions (pytester, in subprocesses, since they start worker
processes) whose app under test is ``fixtures.celery_app:app`` — real tasks, real prefork workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INI = "[pytest]\nmemguard_celery_app = fixtures.celery_app:app\n"
#: Each pytester session must end on its own; this only bounds a hang (no timing is asserted).
SESSION_TIMEOUT_S = 300


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in a subprocess (wide terminal, no pytest-memray), with the repository importable."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for name in ("MEMGUARD_BROKER_URL", "MEMGUARD_RESULT_BACKEND", "MEMGUARD_FS_FOLDER", "MEMGUARD_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    pytester.makefile(".ini", pytest=INI)

    def _run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "no:memray", "-p", "no:cacheprovider", *args, timeout=SESSION_TIMEOUT_S
        )

    return _run


def outcomes_by_test(result: pytest.RunResult) -> dict[str, str]:
    """``{"test_x.py::test_a": "PASSED", ...}`` from a ``-rA`` short summary."""
    found = {}
    for line in result.outlines:
        for word in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"):
            if line.startswith(word + " "):
                nodeid = line.split()[1]
                found[nodeid] = word
    return found


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
