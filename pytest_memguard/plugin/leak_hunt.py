"""``--hunt-leaks[=WARMUP:RUNS]`` and ``@pytest.mark.max_leak_kb``: the leak engine around a test's call phase.

After a test's call phase passed, its body runs WARMUP more times unmeasured and RUNS times measured by
:class:`~pytest_memguard.leaks.LeakHunter` (retained traced heap after GC, and RSS, after every run), each run with
fresh function-scoped fixtures where possible (:mod:`.fresh`). The verdict line goes into a ``memguard: leaks``
report section, a progress/verdict line while the suite runs, and the terminal summary; a flagged test lists the
sites that grew (file:line and a short stack) and the pympler types whose count grew, both bounded.

Why the hunt runs *outside* the manager's measurement (both wrappers are ``trylast``; this one is registered later,
so pluggy calls it first and the manager's runs inside it) but inside pytest's output and log capture:
the hunter restarts tracemalloc and drops older traces, so it must never run inside a ``MemoryMonitor`` or a
``--memguard-trace`` tracer; by the time this wrapper resumes, both have finished.

Celery tasks: a task the test runs (eagerly or through a worker) runs again with each re-run of the test, and a
task run in this process is part of what is measured; a worker in another process is not (its heap is not ours).
So after the test's own hunt, each distinct task execution the test started is hunted on its own, in the test's
mode (:mod:`.task_hunt`): its verdict lines join the test's in the report, the summary and the JSON.

``@pytest.mark.max_leak_kb(kb)`` alone makes that test hunted (a user adding the marker expects it to be
checked), with the ``--hunt-leaks`` spec or the default 3:10, and fails the test when it grows steadily by more
than ``kb`` KB per run (:meth:`HuntResult.check_limit`). Without the marker a leak is reported, not failed.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import _pytest
import pluggy
import pytest

from ..leaks import DEFAULT_RUNS, DEFAULT_WARMUP, HuntResult, LeakHunter
from . import task_hunt, xdist
from .fresh import call_fresh
from .manager import STATE

MARKER = "max_leak_kb"
MARKER_HELP = (
    f"{MARKER}(kb_per_run): hunt this test for leaks (as --hunt-leaks does) and fail it when its memory grows "
    "steadily by more than kb_per_run KB per run. With task='pattern' it limits the hunts of the test's Celery tasks "
    "whose name matches instead."
)
REPORT_ATTR = "memguard_leak"
HUNT = pytest.StashKey["HuntOutcome"]()
LIMIT = pytest.StashKey["float | None"]()
TASK_LIMITS = pytest.StashKey["list[tuple[str, float]]"]()
HUNT_NAME = "memguard_leak_hunt"
# Frames of the plugin, pytest and pluggy say nothing about where a test leaks.
EXCLUDE = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) for m in (_pytest, pluggy) if getattr(m, "__file__", None)
) + (os.path.dirname(os.path.abspath(__file__)),)
SUMMARY_SITES = 5


def _rerun_without_bookkeeping(item: pytest.Item, state: Any) -> None:
    """One re-run of ``item``, then drop what memguard itself kept of it: the Celery records the run produced
    (in this test's state and in the process's record registry, both already read by the run's own fixtures).

    Without this, every re-run of a test that runs Celery tasks eagerly leaves a record or two behind, ~1.6 KB/run,
    and the hunt flags memguard's bookkeeping as the test's leak.
    """
    before = len(state.tasks) if state is not None else 0
    produced: list[Any] = []
    registry = None
    store = sys.modules.get("pytest_memguard.celery.store")  # Celery is imported only by tests that use it
    if store is not None:
        registry = store.local_records
        registry.subscribe(produced.append)
    try:
        call_fresh(item)
    finally:
        if registry is not None:
            registry.unsubscribe(produced.append)
            registry.discard(produced)
        if state is not None:
            del state.tasks[before:]


class LeakLimitExceeded(pytest.fail.Exception):
    """The call-phase failure of a test over its ``max_leak_kb`` (one line, no traceback)."""

    __module__ = "builtins"


@dataclass
class HuntOutcome:
    result: HuntResult | None
    error: str | None = None
    limit_kb: float | None = None
    limit_line: str | None = None  # set when the limit was exceeded
    tasks: list[task_hunt.TaskHuntOutcome] = field(default_factory=list)
    task_notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        if self.result is None:
            return f"hunt not finished: {self.error}"
        return self.result.verdict.render(self.result.sites)

    def text(self, verbose: bool) -> str:
        lines = [self.limit_line] if self.limit_line else []
        if self.result is not None:
            lines.append(self.result.render(verbose=verbose))
        if self.error:
            lines.append(f"hunt not finished: {self.error}")
        if self.limit_kb is not None and not self.limit_line and self.result is not None:
            lines.append(f"within max_leak_kb {self.limit_kb:g} KB/run")
        lines += [task.text(verbose) for task in self.tasks] + self.task_notes
        return "\n".join(lines)

    @property
    def flagged(self) -> bool:
        own = bool(self.limit_line) or (self.result is not None and self.result.leaking)
        return own or any(task.flagged for task in self.tasks)

    @property
    def limit_lines(self) -> list[str]:
        """Every exceeded ``max_leak_kb``: the test's own, then its tasks'."""
        return [line for line in [self.limit_line] + [t.limit_line for t in self.tasks] if line]

    def as_dict(self, nodeid: str, verbose: bool) -> dict:
        return {
            "nodeid": nodeid,
            "verdict": self.headline,
            "leaking": self.result.leaking if self.result is not None else None,
            "flagged": self.flagged,
            "limit_kb": self.limit_kb,
            "limit_exceeded": self.limit_line,
            "error": self.error,
            "text": self.text(verbose),
            "hunt": self.result.as_dict() if self.result is not None else None,
            "tasks": [task.as_dict() for task in self.tasks],
            "task_notes": list(self.task_notes),
        }


def marker_limit(item: pytest.Item) -> float | None:
    """The closest ``max_leak_kb`` marker's KB/run, ``None`` without one; ``ValueError`` with a message if bad."""
    # A marker with task= limits the test's tasks (.task_hunt), not the test.
    mark = next((m for m in item.iter_markers(MARKER) if "task" not in m.kwargs), None)
    if mark is None:
        return None
    args = list(mark.args) + [mark.kwargs[k] for k in ("kb_per_run", "kb") if k in mark.kwargs]
    unknown = set(mark.kwargs) - {"kb_per_run", "kb"}
    value = args[0] if len(args) == 1 and not unknown else None
    try:
        kb = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        kb = None
    if kb is None or kb < 0 or kb != kb:
        raise ValueError(
            f"bad {MARKER} marker on {item.nodeid}: {mark.args!r} {mark.kwargs or ''}; "
            f"write @pytest.mark.{MARKER}(10) for 10 KB per run"
        )
    return kb


class Progress:
    """Hunt progress on the terminal: a line rewritten in place on a TTY, else one verdict line per test.

    Writes bypass output capture (the hunt runs inside the call phase), as pytest's live logging does.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tr: Any = None
        self.capman: Any = None
        self.live = False
        self.nodeid = ""

    @contextmanager
    def _uncaptured(self):
        if self.capman is None:
            yield
        else:
            with self.capman.global_and_fixture_disabled():
                yield

    def start(self, nodeid: str) -> None:
        if self.tr is None:  # looked up late: the terminal reporter registers in its own pytest_configure
            plugins = self.config.pluginmanager
            self.tr = plugins.get_plugin("terminalreporter")
            self.capman = plugins.get_plugin("capturemanager")
            tty = self.tr is not None and bool(self.tr.isatty) and os.environ.get("TERM") != "dumb"
            self.live = tty and self.config.get_verbosity() <= 0
        self.nodeid = nodeid
        if self.live:
            with self._uncaptured():
                self.tr.ensure_newline()

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.live:
            with self._uncaptured():
                self.tr.rewrite(f"memguard: hunting {self.nodeid}: {phase} {done}/{total}", erase=True)

    def done(self, line: str) -> None:
        if self.tr is None:
            return
        text = f"memguard: hunt-leaks {self.nodeid}: {line}"
        with self._uncaptured():
            if self.live:
                self.tr.rewrite(text, erase=True)
                self.tr.write("\n")
                self.tr.currentfspath = None  # the next result letter starts a fresh line with its file
            else:
                self.tr.write_line(text)


class LeakHunt:
    """Session plugin: hunts tests, adds the report section, gathers verdicts for the summary and JSON."""

    def __init__(self, config: pytest.Config, hunt: tuple[int, int] | None, manager: Any) -> None:
        self.config = config
        self.hunt_all = hunt is not None
        self.warmup, self.runs = hunt or (DEFAULT_WARMUP, DEFAULT_RUNS)
        self.manager = manager
        self.verbose = config.get_verbosity() > 0
        self.progress = Progress(config)
        self.results: list[dict] = []

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not self.hunt_all:
            return []
        return [f"memguard: hunting leaks in every test ({self.warmup} warm-up runs, {self.runs} measured runs)"]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        try:
            item.stash[LIMIT] = marker_limit(item)
            item.stash[TASK_LIMITS] = task_hunt.task_limits(item)
        except ValueError as exc:
            pytest.fail(f"pytest-memguard: {exc}", pytrace=False)

    # trylast and registered after the manager: inside output capture and log capture (normal wrappers), outside
    # the manager's measurement (its trylast wrapper, registered earlier, is called later, so runs inside this one).
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item):
        result = yield  # a test that failed (own failure or budget) is not hunted
        limit = item.stash.get(LIMIT, None)
        if not self.wants(item):
            return result
        memory = _celery_memory(item)
        sends, notes = task_hunt.sends_of(memory) if memory is not None else ([], [])  # before re-runs replace it
        outcome = self._hunt(item, limit)
        memory = _celery_memory(item)  # the latest run's: its mode and worker session are the test's
        if memory is not None and (sends or notes):
            self.progress.start(item.nodeid)
            outcome.tasks = task_hunt.hunt_tasks(
                memory,
                sends,
                self.warmup,
                self.runs,
                limits=item.stash.get(TASK_LIMITS, []),
                exclude=EXCLUDE,
                progress=self.progress.tick,
            )
            outcome.task_notes = notes
            for task in outcome.tasks:
                self.progress.done(task.limit_line or task.headline)
        item.stash[HUNT] = outcome
        if outcome.limit_lines:
            raise LeakLimitExceeded("\n".join(outcome.limit_lines), pytrace=False)
        return result

    def wants(self, item: pytest.Item) -> bool:
        """Whether ``item`` is hunted: ``--hunt-leaks``, or a ``max_leak_kb`` marker (with or without ``task=``)."""
        return self.hunt_all or item.get_closest_marker(MARKER) is not None

    def _hunt(self, item: pytest.Item, limit: float | None) -> HuntOutcome:
        self.progress.start(item.nodeid)
        hunter = LeakHunter(self.warmup, self.runs, exclude=EXCLUDE, progress=self.progress.tick)
        state = item.stash.get(STATE, None)
        tasks_before = len(state.tasks) if state is not None else 0
        self.manager.current_item = item  # Celery records of the re-runs go to this test (and are dropped below)
        try:
            outcome = HuntOutcome(hunter.hunt(_rerun_without_bookkeeping, item, state), limit_kb=limit)
        except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
            outcome = HuntOutcome(None, error=f"a re-run raised {type(exc).__name__}: {exc}", limit_kb=limit)
        finally:
            self.manager.current_item = None
            if state is not None:
                del state.tasks[tasks_before:]
        if limit is not None:
            if outcome.result is None:
                outcome.limit_line = f"max_leak_kb {limit:g}: could not hunt ({outcome.error})"
            else:
                verdict = outcome.result.check_limit(limit)
                if verdict.leaking:
                    outcome.limit_line = (
                        f"leak limit exceeded: ~{verdict.kb_per_run:.1f} KB/run over {verdict.runs} runs "
                        f"({verdict.metric}) > max_leak_kb {limit:g}"
                    )
        self.progress.done(outcome.limit_line or outcome.headline)
        return outcome

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if call.when == "call":
            outcome = item.stash.get(HUNT, None)
            if outcome is not None:
                report.sections.append(("memguard: leaks", outcome.text(self.verbose)))
                setattr(report, REPORT_ATTR, outcome.as_dict(item.nodeid, self.verbose))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_ATTR, None)
        if report.when == "call" and isinstance(data, dict):
            self.results.append(data)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        extra = getattr(self.manager, "json_extra", None)
        if extra is not None and self.results and not xdist.is_worker(self.config):
            extra["leaks"] = sorted(self.results, key=lambda r: r["nodeid"])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if xdist.is_worker(self.config) or not self.results:
            return
        flagged = [r for r in self.results if r.get("flagged")]
        tr = terminalreporter
        tr.write_sep("=", "memguard: leak hunt")
        for r in sorted(self.results, key=lambda r: r["nodeid"]):
            if r.get("flagged"):
                tr.write_line(f"{r['nodeid']}:", red=True, bold=True)
                for line in _bounded(r["text"]).splitlines():
                    tr.write_line(f"  {line}")
            elif self.verbose or r.get("error"):
                tr.write_line(f"{r['nodeid']}: {r['verdict']}")
        tr.write_line(f"memguard: {len(self.results)} test(s) hunted, {len(flagged)} flagged")


def _celery_memory(item: pytest.Item) -> Any:
    """The test's ``CeleryMemory`` (its Celery fixtures' state), ``None`` for a test without them."""
    from .celery_fixtures import MEMORY

    return item.stash.get(MEMORY, None)


def _bounded(text: str, max_lines: int = 40) -> str:
    lines = text.splitlines()
    if len(lines) <= max_lines:
        return text
    return "\n".join(lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines in the JSON output)"])


def register_leak_hunt(config: pytest.Config, hunt: tuple[int, int] | None, manager: Any) -> LeakHunt:
    config.addinivalue_line("markers", MARKER_HELP)
    plugin = LeakHunt(config, hunt, manager)
    config.pluginmanager.register(plugin, HUNT_NAME)
    return plugin
