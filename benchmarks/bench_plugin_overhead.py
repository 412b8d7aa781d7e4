"""Overhead of the pytest plugin: bare pytest vs. pytest-memguard vs. pytest-memray, side by side in one run.

Generates a suite of 200 small allocation-heavy tests into a temporary directory and times whole pytest runs
(wall clock, subprocess, interleaved repetitions, median):

- bare:      ``pytest -p no:memguard -p no:memray``
- memguard:  ``pytest -p no:memray``, every test marked ``@pytest.mark.max_peak_mb(512)``
- memguard+delta: as above plus ``max_delta_mb(64)`` (collects garbage and trims the heap at start and end)
- memray:    ``pytest -p no:memguard --memray``, every test marked ``@pytest.mark.limit_memory("512 MB")``

Target: memguard <= 1.10x bare. Run: ``python benchmarks/bench_plugin_overhead.py [--reps N] [--tests N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = """
def test_alloc_{i}():
    rows = [str(n) * 3 for n in range(4000)]
    table = {{n: bytes(64) for n in range(1500)}}
    blob = bytearray(256 * 1024)
    assert len(rows) == 4000 and len(table) == 1500 and len(blob) == 262144
"""

INI = """[pytest]
markers =
    max_peak_mb: memguard
    max_delta_mb: memguard
    limit_memory: memray
"""


def write_suite(root: Path, name: str, decorators: list[str], n_tests: int, per_file: int = 20) -> Path:
    suite = root / name
    suite.mkdir()
    (suite / "pytest.ini").write_text(INI)
    for f in range(n_tests // per_file):
        lines = ["import pytest", ""]
        for i in range(f * per_file, (f + 1) * per_file):
            lines.extend(decorators)
            lines.append(BODY.format(i=i).strip("\n"))
            lines.append("")
        (suite / f"test_gen_{f:02d}.py").write_text("\n".join(lines))
    return suite


def time_run(suite: Path, args: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=suite, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {suite}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tests", type=int, default=200)
    opts = parser.parse_args()
    have_memray = importlib.util.find_spec("pytest_memray") is not None
    with tempfile.TemporaryDirectory(prefix="memguard-bench-") as tmp:
        root = Path(tmp)
        memguard_suite = write_suite(root, "memguard", ["@pytest.mark.max_peak_mb(512)"], opts.tests)
        delta_suite = write_suite(
            root, "delta", ["@pytest.mark.max_peak_mb(512)", "@pytest.mark.max_delta_mb(64)"], opts.tests
        )
        memray_suite = write_suite(root, "memray", ['@pytest.mark.limit_memory("512 MB")'], opts.tests)
        configs = {
            "bare": (memguard_suite, ["-p", "no:memguard", "-p", "no:memray"]),
            "memguard": (memguard_suite, ["-p", "no:memray"]),
            "memguard+delta": (delta_suite, ["-p", "no:memray"]),
        }
        if have_memray:
            configs["memray"] = (memray_suite, ["-p", "no:memguard", "--memray"])
        times: dict[str, list[float]] = {name: [] for name in configs}
        for suite, args in configs.values():  # warm-up: imports, pyc files
            time_run(suite, args)
        for _ in range(opts.reps):
            for name, (suite, args) in configs.items():  # interleaved, so machine noise hits all alike
                times[name].append(time_run(suite, args))
    bare = statistics.median(times["bare"])
    print(f"{opts.tests} tests, {opts.reps} interleaved repetitions, median wall time of the whole pytest run:")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"min {min(values):.2f}s max {max(values):.2f}s"
        print(f"  {name:15s} {median:6.2f}s  ({median / bare:4.2f}x bare; {spread})")
    if not have_memray:
        print("  memray          (pytest-memray not installed)")
    ratio = statistics.median(times["memguard"]) / bare
    best = min(times["memguard"]) / min(times["bare"])  # the least noisy estimate on a shared machine
    verdict = "OK" if ratio <= 1.10 else "OVER TARGET"
    print(f"memguard / bare = {ratio:.3f} by median, {best:.3f} by best run (target <= 1.10): {verdict}")


if __name__ == "__main__":
    main()
