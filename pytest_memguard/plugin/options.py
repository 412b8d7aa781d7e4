"""Command-line options and ini keys, and their reading into one :class:`PluginOptions` at configure time.

Why read everything once here: every bad value becomes a ``pytest.UsageError`` naming the option and the fix before
any test runs, and the rest of the plugin works with typed values instead of ``config.getoption`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .budgets import BudgetError, BudgetSet, parse_spec

DEFAULT_FRAMES = 10
DEFAULT_TOP = 5
DEFAULT_SITES = 10


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("memguard", "memory budgets (pytest-memguard)")
    group.addoption(
        "--memory-budget",
        dest="memory_budget",
        metavar="SPEC",
        default=None,
        help="default memory budget for tests without a marker: a peak in MB (200, '1.5GiB'), "
        "'peak=200MB,delta=10MB,rss=2GB', or a path to a budgets file (.toml/.json). Overrides the ini key.",
    )
    group.addoption(
        "--memguard-children",
        dest="memguard_children",
        action="store_true",
        default=None,
        help="count the memory of child processes a test starts toward its peak and rss (ini: memguard_children).",
    )
    group.addoption(
        "--memguard-trace",
        dest="memguard_trace",
        action="store_true",
        default=None,
        help="trace Python allocations (tracemalloc) during each test; over-budget tests show the sites that grew. "
        "Slows allocation-heavy tests several times.",
    )
    group.addoption(
        "--memguard-trace-frames",
        dest="memguard_trace_frames",
        type=int,
        metavar="N",
        default=None,
        help=f"frames kept per traced allocation (default {DEFAULT_FRAMES}; more frames cost more).",
    )
    group.addoption(
        "--memguard-rerun-traced",
        dest="memguard_rerun_traced",
        action="store_true",
        default=None,
        help="re-run the call phase of an over-budget test once with tracing and a pympler type summary, to show "
        "where the memory went (no cost on green runs).",
    )
    group.addoption(
        "--memguard-json",
        dest="memguard_json",
        metavar="PATH",
        default=None,
        help="write every test's and task's memory figures as JSON to PATH.",
    )
    group.addoption(
        "--memguard-top",
        dest="memguard_top",
        type=int,
        metavar="N",
        default=None,
        help=f"list the N tests with the highest peak in the terminal summary (default {DEFAULT_TOP}; 0 hides it).",
    )
    parser.addini("memory_budget", "default memory budget SPEC (see --memory-budget)", default=None)
    parser.addini("memguard_children", "count child processes' memory (see --memguard-children)", type="bool")
    parser.addini("memguard_trace", "trace allocations during each test (see --memguard-trace)", type="bool")
    parser.addini("memguard_trace_frames", f"tracemalloc frames (default {DEFAULT_FRAMES})", default=None)
    parser.addini("memguard_rerun_traced", "re-run over-budget tests traced (see --memguard-rerun-traced)", type="bool")
    parser.addini("memguard_top", f"tests listed by peak in the summary (default {DEFAULT_TOP})", default=None)


@dataclass(frozen=True)
class PluginOptions:
    budgets: BudgetSet
    children: bool = False
    trace: bool = False
    trace_frames: int = DEFAULT_FRAMES
    rerun_traced: bool = False
    json_path: Path | None = None
    top: int = DEFAULT_TOP
    top_given: bool = False
    verbosity: int = 0

    @property
    def sites_shown(self) -> int:
        """Allocation sites shown per report: 10, 25 with -v, 50 with -vv."""
        return {0: DEFAULT_SITES, 1: 25}.get(max(self.verbosity, 0), 50)


def _option_or_ini(config: pytest.Config, name: str):
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    return value


def _int(config: pytest.Config, name: str, default: int, *, minimum: int) -> int:
    value = _option_or_ini(config, name)
    if value in (None, ""):
        return default
    flag = "--" + name.replace("_", "-")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise pytest.UsageError(
            f"pytest-memguard: {flag} / ini {name}: expected a whole number, got {value!r}"
        ) from None
    if number < minimum:
        raise pytest.UsageError(f"pytest-memguard: {flag} / ini {name}: must be >= {minimum}, got {number}")
    return number


def read_options(config: pytest.Config) -> PluginOptions:
    """All memguard settings; the command line beats the ini file. Bad values raise ``pytest.UsageError``."""
    spec = config.getoption("memory_budget")
    if spec is not None:
        origin, bases = "--memory-budget", [Path.cwd(), config.rootpath]
    else:
        spec = config.getini("memory_budget")
        ini_dir = config.inipath.parent if config.inipath else config.rootpath
        origin, bases = f"ini key memory_budget ({config.inipath or 'ini'})", [ini_dir, config.rootpath]
    try:
        budgets = parse_spec(spec, origin=origin, base_dirs=bases)
    except BudgetError as exc:
        raise pytest.UsageError(f"pytest-memguard: {exc}") from None
    json_path = config.getoption("memguard_json")
    return PluginOptions(
        budgets=budgets,
        children=bool(_option_or_ini(config, "memguard_children")),
        trace=bool(_option_or_ini(config, "memguard_trace")),
        trace_frames=_int(config, "memguard_trace_frames", DEFAULT_FRAMES, minimum=1),
        rerun_traced=bool(_option_or_ini(config, "memguard_rerun_traced")),
        json_path=Path(json_path) if json_path else None,
        top=_int(config, "memguard_top", DEFAULT_TOP, minimum=0),
        top_given=_option_or_ini(config, "memguard_top") not in (None, ""),
        verbosity=config.get_verbosity(),
    )
