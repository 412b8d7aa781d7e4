"""The session's state and its hooks: one :class:`Manager`, registered in ``pytest_configure`` (pytest-memray's shape).

Per test: resolve the budget at setup (a malformed marker errors that test, naming it), run the call phase inside a
``MemoryMonitor`` (the runtime), judge the figures with :mod:`.markers`, and — for an over-budget test only — add
where the memory went (:mod:`.tracing`, :mod:`.types_summary`). The failure is raised from the call-phase wrapper,
so it is the call report's failure; a test that failed on its own keeps its failure and gets the memory section.

Extension points (for baselines/regression gates and leak hunting):

- :attr:`Manager.consumers`: callables ``(item, outcome) -> iterable of results | None`` called after every
  measured call; returned objects with ``exceeded``, ``line()`` and ``as_dict()`` are judged like budgets.
- :meth:`Manager.record_task`: feed per-task records (``task_name, task_id, peak_delta_mb, delta_mb, peak_mb``)
  during a test's call phase; they are judged against the test's ``task=`` budgets when the call ends.
- :func:`.rerun.rerun_call` and :meth:`Manager.rerun_measured` re-run a call phase under a monitor.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..runtime.monitor import MemoryMonitor
from ..runtime.units import MB
from . import xdist
from .budgets import EMPTY, Budget, BudgetError, ResolvedBudget, resolve_item_budget
from .markers import Figures, TaskRecord, judge, judge_task_record
from .options import PluginOptions
from .reporting import CallOutcome, _mb, summary_lines, write_json
from .rerun import rerun_call
from .tracing import CallTracer
from .types_summary import TypeTracker, render_types

Consumer = Callable[[pytest.Item, CallOutcome], "Iterable[Any] | None"]


@dataclass
class CallState:
    """What memguard keeps on an item (in its stash) between setup, call and report."""

    budget: ResolvedBudget | None = None
    error: str | None = None
    tasks: list[TaskRecord] = field(default_factory=list)
    outcome: CallOutcome | None = None


STATE = pytest.StashKey[CallState]()
MANAGER_NAME = "memguard_manager"


class MemoryBudgetExceeded(pytest.fail.Exception):
    """The call-phase failure of an over-budget test (a ``pytest.fail`` without traceback: one clear line)."""

    __module__ = "builtins"  # as pytest's Failed: the short summary reads "MemoryBudgetExceeded: memory budget..."


_libc_trim: Callable[[int], int] | None | bool = False


def settle_heap(generation: int = 2) -> str:
    """Collect garbage and hand freed heap pages back to the OS, so a delta on RSS means memory still held.

    Without the trim, glibc keeps freed small-object memory (a freed 30 MiB stayed resident, ``MEASUREMENTS.md``)
    and a test that freed everything would still show a delta. The full collection is the cost (≈10 ms on a
    pytest heap of a few 100 k objects, 93 ms at 1 M), so the start of a call collects the young generations only.
    """
    global _libc_trim
    gc.collect(generation)
    if _libc_trim is False:
        try:
            _libc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _libc_trim = None
    if _libc_trim:
        _libc_trim(0)
        return "gc collected + malloc_trim"
    return "gc collected"


class Manager:
    """All of memguard's session state; hooks are methods (no module globals)."""

    def __init__(self, config: pytest.Config, options: PluginOptions, *, honor_memray: bool) -> None:
        self.config = config
        self.options = options
        self.honor_memray = honor_memray
        self.consumers: list[Consumer] = []
        self.records: list[dict] = []
        self.any_budget = not options.budgets.is_empty()
        self.current_item: pytest.Item | None = None
        self.worker = xdist.worker_id(config)
        self.settle_all = False  # the regression gate sets it: delta figures after gc + malloc_trim for every test
        self.json_extra: dict[str, Any] = {}  # top-level keys other features add to --memguard-json (comparison...)

    # -- header -----------------------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        o = self.options
        modes = [f"children {'on' if o.children else 'off'}"]
        if o.trace:
            modes.append(f"trace on ({o.trace_frames} frames)")
        if o.rerun_traced:
            modes.append("rerun-traced on")
        lines = [f"memguard: budget {o.budgets.describe()}; {', '.join(modes)}"]
        if self.honor_memray:
            lines.append(
                "memguard: pytest-memray is not active; limit_memory/limit_leaks markers are honored as "
                "peak/delta budgets on resident memory"
            )
        return lines

    # -- per test ---------------------------------------------------------------------------------------------
    def state(self, item: pytest.Item) -> CallState:
        state = item.stash.get(STATE, None)
        if state is None:
            state = CallState()
            try:
                state.budget = resolve_item_budget(item, self.options.budgets, honor_memray=self.honor_memray)
                if not state.budget.test.is_empty() or state.budget.tasks:
                    self.any_budget = True
            except BudgetError as exc:
                state.error = f"pytest-memguard: bad memory budget: {exc}"
            item.stash[STATE] = state
        return state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        state = self.state(item)
        if state.error:
            pytest.fail(state.error, pytrace=False)

    def record_task(self, record: TaskRecord, item: pytest.Item | None = None) -> None:
        """Hand a task's record to the running (or given) test; judged against its ``task=`` budgets at the end."""
        item = item or self.current_item
        if item is None:
            raise RuntimeError("memguard: record_task() outside a test's call phase; pass the item explicitly")
        self.state(item).tasks.append(record)

    def _monitor(self, name: str, settle: bool) -> MemoryMonitor:
        overrides: dict[str, Any] = {"include_children": self.options.children or None}
        if settle:
            overrides["gc_policy"] = "never"  # settle_heap() collected just before the finish
        return MemoryMonitor(name, log_level=logging.DEBUG, **overrides)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item):
        state = self.state(item)
        budget = state.budget.test if state.budget else EMPTY
        settle = budget.delta is not None or self.settle_all
        tracer = self._tracer(budget) if self.options.trace else None
        monitor = self._monitor(item.nodeid, settle)
        self.current_item = item
        if settle:
            settle_heap(1)  # freed-but-resident memory from earlier tests would hide a leak that reuses it
        if tracer is not None:
            tracer.start()
        monitor.start_monitoring()
        own_exc: BaseException | None = None
        try:
            result = yield
        except BaseException as exc:
            own_exc = exc
        try:
            gc_text = settle_heap() if settle else ""
            monitor.finish_monitoring()
            outcome = self._judge(item, state, budget, monitor, gc_text)
            if outcome.exceeded and isinstance(own_exc, (type(None), Exception)):
                self._diagnose(item, outcome, budget, tracer, failed_on_own=own_exc is not None)
        finally:
            if tracer is not None:
                tracer.stop()
            self.current_item = None
        if self.config.getoption("xmlpath", None):
            item.user_properties.extend(outcome.junit_properties())
        if own_exc is not None:
            raise own_exc
        if outcome.exceeded:
            raise MemoryBudgetExceeded(outcome.failure_text(), pytrace=False)
        return result

    def _tracer(self, budget: Budget) -> CallTracer:
        peak = budget.peak.mb if budget.peak else (budget.rss.mb if budget.rss else None)
        return CallTracer(self.options.trace_frames, peak_budget_bytes=int(peak * MB) if peak else None)

    def _judge(self, item: pytest.Item, state: CallState, budget: Budget, monitor: MemoryMonitor, gc_text: str):
        m = monitor.measurement
        figures = Figures.from_measurement(m, subject=item.nodeid, children=self.options.children, gc=gc_text)
        outcome = CallOutcome(figures, budget, judge(figures, budget), measurement=m, worker=self.worker)
        resolved = state.budget or ResolvedBudget()
        outcome.task_results = [(rec, judge_task_record(rec, resolved)) for rec in state.tasks]
        for consumer in self.consumers:
            extra = consumer(item, outcome)
            if extra:
                outcome.results.extend(extra)
        state.outcome = outcome
        return outcome

    def _diagnose(
        self, item: pytest.Item, outcome: CallOutcome, budget: Budget, tracer: CallTracer | None, failed_on_own: bool
    ) -> None:
        """Where the memory went, for an over-budget test: the traced sites, or a traced re-run when asked for."""
        limit = self.options.sites_shown
        if tracer is not None:
            reports = tracer.reports()
            outcome.diagnostics.extend(r.render(limit) for r in reports)
            outcome.diagnostics_data["sites"] = [r.as_dict(limit) for r in reports]
        elif self.options.rerun_traced and not failed_on_own:
            self.rerun_measured(item, outcome, budget)
        else:
            outcome.diagnostics.append("(run with --memguard-rerun-traced or --memguard-trace to see where it went)")

    def rerun_measured(self, item: pytest.Item, outcome: CallOutcome, budget: Budget) -> None:
        """Re-run the call phase once, traced and with a pympler type summary, and add what it found."""
        types = TypeTracker().start()
        tracer = self._tracer(budget).start()
        monitor = self._monitor(f"{item.nodeid} (re-run)", budget.delta is not None)
        monitor.start_monitoring()
        try:
            exc = rerun_call(item)
            if budget.delta is not None:
                settle_heap()
            monitor.finish_monitoring()
            reports = tracer.reports()
        finally:
            tracer.stop()
        grown = types.grown()
        m = monitor.measurement
        limit = self.options.sites_shown
        head = f"re-run traced ({self.options.trace_frames} frames): peak {_mb(m.peak_delta_mb)} above start"
        if exc is not None:
            head += f"; the re-run raised {type(exc).__name__}: {exc}"
        outcome.diagnostics.append(head)
        outcome.diagnostics.extend(r.render(limit) for r in reports)
        outcome.diagnostics.append(render_types(grown) if not types.error else types.error)
        outcome.diagnostics_data["rerun"] = {
            "peak_mb": m.peak_delta_mb,
            "delta_mb": m.delta_mb,
            "sites": [r.as_dict(limit) for r in reports],
            "types": [row.as_dict() for row in grown],
        }

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if call.when == "call":
            state = item.stash.get(STATE, None)
            outcome = state.outcome if state else None
            if outcome is not None:
                setattr(report, xdist.REPORT_ATTR, outcome.record(item.nodeid, report.outcome))
                if report.failed or outcome.exceeded:
                    report.sections.append(("memguard: memory", outcome.section()))
        return report

    # -- session ----------------------------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = xdist.record_from_report(report)
        if record is not None:
            self.records.append(record)
            if record.get("budget") or record.get("tasks"):
                self.any_budget = True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if xdist.is_worker(self.config) or not self.records:
            return
        if not (self.any_budget or self.options.top_given or self.options.json_path):
            return
        lines = summary_lines(self.records, self.options.top)
        if lines:
            terminalreporter.write_sep("=", "memguard: memory")
            for line in lines:
                terminalreporter.write_line(line)
        if self.options.json_path:
            terminalreporter.write_line(f"memguard: figures written to {self.options.json_path}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.options.json_path and not xdist.is_worker(self.config):
            write_json(self.options.json_path, self.records, extra=self.json_extra)
