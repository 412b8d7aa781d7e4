"""Helpers for the gate and leak-hunt tests: real pytest sessions in subprocesses (``runpytest_subprocess``).

Why subprocesses: the kernel's high-water mark and tracemalloc are per process, so an in-process session would mix
the outer run's memory with the inner one's; and each session must read and write its baseline like a CI job.
The repository root goes on ``PYTHONPATH`` so the sessions import the real workloads in ``fixtures/leaks``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_ARGS = ("-p", "no:memray", "-p", "no:cacheprovider")


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    def _run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(*BASE_ARGS, *args)

    return _run


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
