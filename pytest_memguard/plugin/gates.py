"""The regression gate in pytest: ``--memory-baseline-save``, ``--memory-baseline-compare``, ``--memory-repeat``.

The engine (files, tolerances, comparison, rendering) is :mod:`pytest_memguard.baseline`; this module only wires it
to a session:

* **Per test** (on whichever process runs it, an xdist worker included): a :attr:`Manager.consumers` entry re-runs
  the call phase for ``--memory-repeat`` and keeps the run with the smallest peak (budgets are judged on that run),
  and, when comparing, adds the baseline figures and any regression to the test's JUnit properties.
* **Once, at the end** (on the controller only): the figures every test report carried (``report.memguard``, so
  xdist workers need no file access) become baseline entries; they are compared with the baseline and/or saved.
  Regressions do not fail single tests — they are gathered into one table and make the session exit 1
  (``pytest.ExitCode.TESTS_FAILED``). New and missing names are listed, never failed.

Why the controller writes the file once instead of every worker merging into it: the controller already receives
every figure, so one atomic write is simpler and cannot interleave; ``merge_into_baseline`` remains for tools that
write from several processes.

The baseline is read at configure time, so a corrupt or foreign file is a one-line usage error naming it before
any test runs — and, since nothing is written then, it is never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from ..baseline import (
    Baseline,
    BaselineError,
    Comparison,
    Entry,
    add_task_records,
    commit_info,
    compare,
    load_baseline,
    machine_info,
    machine_warning,
    min_peak,
    render_text,
    save_baseline,
)
from . import xdist
from .fresh import can_refresh, refresh_fixtures
from .gate_options import GateOptions
from .manager import settle_heap
from .markers import BudgetResult, Figures, judge
from .reporting import CallOutcome
from .rerun import rerun_call

RAISED = pytest.StashKey[bool]()
GATE_NAME = "memguard_gate"


def _usage(exc: BaselineError) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-memguard: {exc}")


def gated_outcome(record: dict) -> bool:
    """Which tests' figures enter a baseline or a comparison: passed ones, and those failed only on a budget.

    A test that failed on its own stopped somewhere in the middle; its figures would make a later run look like a
    regression (or hide one).
    """
    return record.get("outcome") == "passed" or (record.get("outcome") == "failed" and bool(record.get("exceeded")))


def _task_for_entry(task: dict) -> dict:
    """A results-file task dict in the runtime's naming, which :func:`add_task_records` reads.

    The plugin's records name the peak above start ``peak_mb`` and the absolute peak ``rss_mb`` (like tests);
    task records from the runtime name them ``peak_delta_mb`` and ``peak_mb``.
    """
    if "peak_delta_mb" in task:
        return task
    return {
        "task_name": task.get("task_name"),
        "peak_delta_mb": task.get("peak_mb"),
        "delta_mb": task.get("delta_mb"),
        "peak_mb": task.get("rss_mb"),
    }


def entries_from_records(records: Iterable[dict]) -> dict[str, Entry]:
    """Baseline entries of a session: one per gated test (node id), one per Celery task name (its worst call)."""
    entries: dict[str, Entry] = {}
    tasks: list[dict] = []
    for record in records:
        if not gated_outcome(record):
            continue
        runs = (record.get("diagnostics") or {}).get("repeat", {}).get("runs")
        entries[record["nodeid"]] = Entry(
            record.get("peak_mb"), record.get("delta_mb"), record.get("rss_mb"), kind="test", runs=runs
        )
        tasks.extend(_task_for_entry(t) for t in record.get("tasks") or [])
    return add_task_records(entries, tasks)


class Gate:
    """The session's regression gate (registered as a plugin next to the :class:`~.manager.Manager`)."""

    def __init__(self, config: pytest.Config, options: GateOptions, manager: Any) -> None:
        self.config = config
        self.options = options
        self.manager = manager
        self.baseline: Baseline | None = None
        self.comparison: Comparison | None = None
        self.notes: list[str] = []
        self.warning: str | None = None
        path = options.baseline_path
        try:
            if options.compare and (path.exists() or not options.save):
                self.baseline = load_baseline(path)
            elif options.save and path.exists():
                load_baseline(path)  # a corrupt or foreign file must stop the run now, not be overwritten later
        except BaselineError as exc:
            raise _usage(exc) from None
        if options.compare and self.baseline is None:
            self.notes.append(f"no baseline at {path} yet: nothing compared; this run's figures become it")
        if self.baseline is not None and self.baseline.machine:
            self.warning = machine_warning(self.baseline.machine, machine_info(), source=str(path))
        if hasattr(manager, "settle_all"):
            # Every measured call starts and ends on a settled heap (gc + malloc_trim): delta figures stable enough
            # to gate, and a repeat does not start on memory the previous run freed but glibc kept (its peak
            # above start would read 0 while reusing those pages).
            manager.settle_all = True
        manager.consumers.insert(0, self.consume)  # first: later consumers see the repeat's chosen figures

    # -- header -----------------------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        o = self.options
        modes = []
        if o.compare and o.tolerance is not None:
            modes.append(f"compare ({o.tolerance.describe()})")
        if o.save:
            modes.append("save")
        lines = []
        if modes:
            lines.append(f"memguard: baseline {o.baseline_path}: {', '.join(modes)}")
        if o.repeat > 1:
            lines.append(f"memguard: each measured call runs {o.repeat} times; the smallest peak is kept")
        if self.warning:
            lines.append(f"memguard: warning: {self.warning}")
        return lines

    # -- per test ---------------------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function):
        """Remember whether the test body raised: a failing test is not repeated."""
        try:
            return (yield)
        except BaseException:
            pyfuncitem.stash[RAISED] = True
            raise

    def consume(self, item: pytest.Item, outcome: CallOutcome) -> None:
        if self.options.repeat > 1 and not item.stash.get(RAISED, False):
            self._repeat(item, outcome)
        if self.baseline is not None and self.config.getoption("xmlpath", None):
            item.user_properties.extend(self._junit_properties(item.nodeid, outcome))
        return None

    def _repeat(self, item: pytest.Item, outcome: CallOutcome) -> None:
        """Run the call phase ``repeat - 1`` more times, each measured alone; keep the run with the smallest peak."""
        manager = self.manager
        settle = outcome.budget.delta is not None or getattr(manager, "settle_all", False)
        measurements = [outcome.measurement]
        stopped = None
        for run in range(2, self.options.repeat + 1):
            try:
                if can_refresh(item):
                    refresh_fixtures(item)  # fixtures set up outside the measurement, as for the first run
            except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
                stopped = f"fixture setup of run {run} raised {type(exc).__name__}: {exc}"
                break
            if settle:
                settle_heap(1)
            monitor = manager._monitor(f"{item.nodeid} (run {run})", settle)
            monitor.start_monitoring()
            exc = rerun_call(item)
            if settle:
                settle_heap()
            monitor.finish_monitoring()
            if exc is not None:
                stopped = f"run {run} raised {type(exc).__name__}: {exc}"
                break
            measurements.append(monitor.measurement)
        best = min_peak(measurements)
        peaks = [getattr(m, "peak_delta_mb", None) for m in measurements]
        outcome.diagnostics_data["repeat"] = {"runs": len(measurements), "peaks_mb": peaks}
        if stopped:
            outcome.diagnostics.append(f"--memory-repeat stopped early: {stopped}")
            outcome.diagnostics_data["repeat"]["stopped"] = stopped
        if best is not outcome.measurement:
            old = outcome.figures
            outcome.figures = Figures.from_measurement(
                best, subject=old.subject, children=manager.options.children, gc=old.gc
            )
            outcome.measurement = best
            others = [r for r in outcome.results if not isinstance(r, BudgetResult)]
            outcome.results[:] = judge(outcome.figures, outcome.budget) + others
        shown = ", ".join("?" if p is None else f"{p:.1f}" for p in peaks)
        outcome.diagnostics.append(f"--memory-repeat: {len(measurements)} runs, peaks {shown} MB; kept the smallest")

    def _junit_properties(self, nodeid: str, outcome: CallOutcome) -> list[tuple[str, object]]:
        assert self.baseline is not None and self.options.tolerance is not None
        base = self.baseline.entries.get(nodeid)
        if base is None:
            return [("memguard_baseline", "new")]
        f = outcome.figures
        props: list[tuple[str, object]] = [
            (f"memguard_baseline_{metric}_mb", base.metric(metric))
            for metric in ("peak", "delta", "rss")
            if base.metric(metric) is not None
        ]
        now = Entry(f.peak_mb, f.delta_mb, f.rss_mb)
        result = compare({nodeid: base}, {nodeid: now}, self.options.tolerance)
        if result.regressions:
            props.append(("memguard_regression", "; ".join(_change_text(c) for c in result.regressions)))
        if result.improvements:
            props.append(("memguard_improvement", "; ".join(_change_text(c) for c in result.improvements)))
        return props

    # -- session ----------------------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Compare and/or save once, on the controller; before the manager writes the JSON file (tryfirst)."""
        if xdist.is_worker(self.config) or not self.options.gating:
            return
        entries = entries_from_records(self.manager.records)
        o = self.options
        if o.compare and self.baseline is not None and o.tolerance is not None:
            warnings = [self.warning] if self.warning else []
            self.comparison = compare(self.baseline.entries, entries, o.tolerance, warnings=warnings)
            extra = getattr(self.manager, "json_extra", None)
            if extra is not None:
                extra["comparison"] = {"baseline": str(o.baseline_path), **self.comparison.as_dict()}
            if self.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if o.save:
            self._save(session, entries)

    def _save(self, session: pytest.Session, entries: dict[str, Entry]) -> None:
        path = self.options.baseline_path
        if not entries:
            self.notes.append(f"baseline not saved: no passing test was measured (left {path} as it was)")
            return
        commit = commit_info(self.config.rootpath)
        try:
            save_baseline(path, entries, machine=machine_info(), commit=commit)
        except BaselineError as exc:
            self.notes.append(f"baseline not saved: {exc}")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        tasks = sum(1 for e in entries.values() if e.kind == "task")
        where = ""
        if commit:
            where = f" at commit {str(commit.get('id'))[:12]}" + (" (dirty)" if commit.get("dirty") else "")
        self.notes.append(f"baseline saved to {path}: {len(entries) - tasks} test(s), {tasks} task(s){where}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if xdist.is_worker(self.config) or not (self.comparison or self.notes):
            return
        terminalreporter.write_sep("=", "memguard: baseline")
        if self.comparison is not None:
            for line in render_text(self.comparison).rstrip("\n").splitlines():
                terminalreporter.write_line(line)
            if self.comparison.failed:
                terminalreporter.write_line(
                    f"memguard: memory regression gate FAILED: {len(self.comparison.regressions)} regression(s) "
                    f"against {self.options.baseline_path}",
                    red=True,
                    bold=True,
                )
            else:
                terminalreporter.write_line(f"memguard: memory regression gate passed ({self.options.baseline_path})")
        for note in self.notes:
            terminalreporter.write_line(f"memguard: {note}")


def _change_text(change: Any) -> str:
    pct = change.change_pct
    rel = f" ({pct:+.1f}%)" if pct is not None else ""
    return f"{change.metric} {change.baseline_mb:.1f}MB -> {change.now_mb:.1f}MB{rel}"


def register_gate(config: pytest.Config, options: GateOptions, manager: Any) -> Gate:
    gate = Gate(config, options, manager)
    config.pluginmanager.register(gate, GATE_NAME)
    return gate
