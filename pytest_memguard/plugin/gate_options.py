"""Options of the regression gate and the leak hunt, read once at configure time into :class:`GateOptions`.

Why apart from :mod:`.options`: the budgets' options and these grow independently (and are edited by different
people); both register in the same ``memguard`` group so ``pytest --help`` shows them together. Every bad value is
a ``pytest.UsageError`` naming the option, before any test runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..baseline import DEFAULT_BASELINE_PATH, Tolerance, ToleranceError, parse_tolerance
from ..leaks import DEFAULT_RUNS, DEFAULT_WARMUP, HuntSpecError, parse_hunt_spec

DEFAULT_TOLERANCE = "10%"
DEFAULT_HUNT = f"{DEFAULT_WARMUP}:{DEFAULT_RUNS}"


def add_gate_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("memguard", "memory budgets (pytest-memguard)")
    group.addoption(
        "--memory-baseline",
        dest="memory_baseline",
        metavar="PATH",
        default=None,
        help=f"baseline file for --memory-baseline-save/--memory-baseline-compare (default {DEFAULT_BASELINE_PATH} "
        "under the rootdir; ini: memory_baseline).",
    )
    group.addoption(
        "--memory-baseline-save",
        dest="memory_baseline_save",
        action="store_true",
        default=False,
        help="write this run's figures (per test and per Celery task, with machine and git info) to the baseline.",
    )
    group.addoption(
        "--memory-baseline-compare",
        dest="memory_baseline_compare",
        action="store_true",
        default=False,
        help="compare this run with the baseline; regressions beyond --memory-regression fail the session.",
    )
    group.addoption(
        "--memory-regression",
        dest="memory_regression",
        metavar="SPEC",
        default=None,
        help=f"regression tolerance (implies --memory-baseline-compare): '10%%', '+5MB', 'peak:10%%,delta:+2MB' "
        f"(default {DEFAULT_TOLERANCE.replace('%', '%%')}; ini: memory_regression).",
    )
    group.addoption(
        "--memory-repeat",
        dest="memory_repeat",
        type=int,
        metavar="N",
        default=None,
        help="run each measured call phase N times (fresh function-scoped fixtures) and keep the run with the "
        "smallest peak (noise control).",
    )
    group.addoption(
        "--hunt-leaks",
        dest="hunt_leaks",
        nargs="?",
        const=DEFAULT_HUNT,
        default=None,
        metavar="WARMUP:RUNS",
        help=f"re-run each test's call phase WARMUP times unmeasured, then RUNS times measured, and report steady "
        f"memory growth per run with the lines that grew (default {DEFAULT_HUNT}; write --hunt-leaks=3:10).",
    )
    group.addoption(
        "--memguard-profile",
        dest="memguard_profile",
        metavar="NAME",
        default=None,
        help="line-by-line memory profile (memory-profiler, extra 'profile') of a test function named NAME, or of "
        "the function 'package.module.func' / 'package.module:func' during each selected test that calls it.",
    )
    parser.addini("memory_baseline", f"baseline file (default {DEFAULT_BASELINE_PATH} under the rootdir)")
    parser.addini("memory_regression", f"regression tolerance SPEC (default {DEFAULT_TOLERANCE})")


@dataclass(frozen=True)
class GateOptions:
    baseline_path: Path
    save: bool = False
    compare: bool = False
    tolerance: Tolerance | None = None
    repeat: int = 1
    hunt: tuple[int, int] | None = None  # (warmup, runs) when --hunt-leaks is given
    profile: str | None = None

    @property
    def gating(self) -> bool:
        return self.save or self.compare


def _baseline_path(config: pytest.Config) -> Path:
    value = config.getoption("memory_baseline")
    base = config.invocation_params.dir
    if not value:
        value = config.getini("memory_baseline")
        base = config.inipath.parent if config.inipath else config.rootpath
    if not value:
        return config.rootpath / DEFAULT_BASELINE_PATH
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else base / path


def resolve_function(name: str) -> Any:
    """The function ``pkg.mod.func`` or ``pkg.mod:func`` (attributes may be nested), or ``None``."""
    if ":" in name:
        module_name, _, attrs = name.partition(":")
        candidates = [(module_name, attrs)]
    else:
        parts = name.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    for module_name, attrs in candidates:
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
            obj: Any = importlib.import_module(module_name)
        except (ImportError, ValueError):
            continue
        try:
            for attr in attrs.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        if callable(obj):
            return obj
    return None


def read_gate_options(config: pytest.Config) -> GateOptions:
    """All gate and hunt settings; bad values raise ``pytest.UsageError`` with one line."""
    spec = config.getoption("memory_regression") or config.getini("memory_regression") or None
    compare = bool(config.getoption("memory_baseline_compare") or config.getoption("memory_regression"))
    tolerance = None
    if compare:
        try:
            tolerance = parse_tolerance(spec or DEFAULT_TOLERANCE)
        except ToleranceError as exc:
            raise pytest.UsageError(f"pytest-memguard: {exc}") from None
    repeat = config.getoption("memory_repeat")
    if repeat is not None and repeat < 1:
        raise pytest.UsageError(f"pytest-memguard: --memory-repeat must be >= 1, got {repeat}")
    hunt = None
    hunt_spec = config.getoption("hunt_leaks")
    if hunt_spec is not None:
        try:
            hunt = parse_hunt_spec(hunt_spec)
        except HuntSpecError as exc:
            hint = ""
            if os.path.exists(hunt_spec) or "::" in hunt_spec:
                hint = f" ({hunt_spec!r} looks like a test path: write --hunt-leaks=3:10 or put the path first)"
            raise pytest.UsageError(f"pytest-memguard: {exc}{hint}") from None
    profile = config.getoption("memguard_profile")
    if profile and importlib.util.find_spec("memory_profiler") is None:
        raise pytest.UsageError(
            "pytest-memguard: --memguard-profile needs memory-profiler: pip install 'pytest-memguard[profile]'"
        )
    return GateOptions(
        baseline_path=_baseline_path(config),
        save=bool(config.getoption("memory_baseline_save")),
        compare=compare,
        tolerance=tolerance,
        repeat=repeat or 1,
        hunt=hunt,
        profile=profile or None,
    )
