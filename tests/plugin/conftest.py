"""Helpers for the plugin's tests: real pytest sessions (pytester) in subprocesses, so each session's kernel peak
is its own and not mixed with the outer test run's."""

from __future__ import annotations

import pytest

NO_MEMRAY = ("-p", "no:memray", "-p", "no:cacheprovider")


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in a subprocess without pytest-memray (unless ``memray=True``), on a wide terminal so the short
    summary lines are not cut."""
    monkeypatch.setenv("COLUMNS", "250")

    def _run(*args: str, memray: bool = False) -> pytest.RunResult:
        extra = ("-p", "no:cacheprovider") if memray else NO_MEMRAY
        return pytester.runpytest_subprocess(*extra, *args)

    return _run
