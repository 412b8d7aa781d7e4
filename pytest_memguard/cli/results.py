"""Reading the files the plugin writes: session results (``--memguard-json``) and baselines.

Why a module of its own: ``memguard html`` draws these files, so it needs every record with its checkpoints, typed,
and a malformed file rejected with one line that names the file, the place in it and what was expected (exit 2),
not a ``KeyError`` traceback. Unknown keys are ignored, so a newer plugin may add fields without breaking an older
command. (``memguard compare`` flattens the same files into baseline entries:
:mod:`pytest_memguard.baseline.results`; baselines themselves are read by :mod:`pytest_memguard.baseline.format`,
here as everywhere.)

The two formats (results, ``"kind": "memguard-results"`` optional, and baselines) are documented in
:mod:`pytest_memguard.cli.html`, whose input they are, and in the README section "The memguard command".
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from ..baseline.errors import BaselineError
from ..baseline.format import KIND as BASELINE_KIND
from ..baseline.format import baseline_from_dict
from ..baseline.results import RESULTS_KIND

FORMAT_VERSION = 1


class ResultsError(ValueError):
    """A results or baseline file that cannot be read; the message is one line naming the file and the place."""


@dataclass
class Checkpoint:
    label: str
    time_s: float
    rss_mb: float


@dataclass
class TaskRecord:
    task_id: str | None
    task_name: str
    state: str | None
    peak_mb: float | None
    delta_mb: float | None
    peak_delta_mb: float | None
    start_mb: float | None
    finish_mb: float | None
    duration_s: float | None
    checkpoints: list[Checkpoint] = field(default_factory=list)


@dataclass
class Budget:
    peak_mb: float | None = None
    delta_mb: float | None = None
    rss_mb: float | None = None

    def over(self, test: TestResult) -> list[str]:
        """The budget names ``test`` exceeds (``peak_mb``…), in a fixed order."""
        return [
            name
            for name in ("peak_mb", "delta_mb", "rss_mb")
            if getattr(self, name) is not None
            and getattr(test, name) is not None
            and getattr(test, name) > getattr(self, name)
        ]


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class, whatever its name

    nodeid: str
    peak_mb: float | None
    delta_mb: float | None
    rss_mb: float | None
    budget: Budget = field(default_factory=Budget)
    outcome: str | None = None
    tasks: list[TaskRecord] = field(default_factory=list)


@dataclass
class Results:
    kind: str  # RESULTS_KIND or BASELINE_KIND
    source: str  # file name, for messages and titles
    tests: list[TestResult] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)

    def all_tasks(self) -> list[tuple[TaskRecord, str | None]]:
        """Every task record once, with the nodeid of the test that made it (when known)."""
        seen: dict[str, int] = {}
        out: list[tuple[TaskRecord, str | None]] = []
        for test in self.tests:
            for task in test.tasks:
                key = task.task_id or f"{test.nodeid}#{len(out)}"
                if key not in seen:
                    seen[key] = len(out)
                    out.append((task, test.nodeid))
        for task in self.tasks:
            if task.task_id is None or task.task_id not in seen:
                out.append((task, None))
        return out


class _Reader:
    """Typed access to decoded JSON with errors that say where: ``tests[2].budget.peak_mb``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ResultsError:
        return ResultsError(f"{self.source}: {where}: {message}")

    def obj(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        return value

    def arr(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected an array, got {_kind(value)}")
        return value

    def num(self, data: dict, key: str, where: str, *, required: bool = False) -> float | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "missing; expected a number")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"expected a number or null, got {_kind(value)}")
        return float(value)

    def text(self, data: dict, key: str, where: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "missing; expected a string")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _task(r: _Reader, value: Any, where: str) -> TaskRecord:
    data = r.obj(value, where)
    checkpoints = []
    for i, item in enumerate(r.arr(data.get("checkpoints", []), f"{where}.checkpoints")):
        cw = f"{where}.checkpoints[{i}]"
        cp = r.obj(item, cw)
        checkpoints.append(
            Checkpoint(
                label=r.text(cp, "label", cw, required=True),
                time_s=r.num(cp, "time_s", cw, required=True),
                rss_mb=r.num(cp, "rss_mb", cw, required=True),
            )
        )
    return TaskRecord(
        task_id=r.text(data, "task_id", where),
        task_name=r.text(data, "task_name", where, required=True),
        state=r.text(data, "state", where),
        peak_mb=r.num(data, "peak_mb", where),
        delta_mb=r.num(data, "delta_mb", where),
        peak_delta_mb=r.num(data, "peak_delta_mb", where),
        start_mb=r.num(data, "start_mb", where),
        finish_mb=r.num(data, "finish_mb", where),
        duration_s=r.num(data, "duration_s", where),
        checkpoints=sorted(checkpoints, key=lambda c: c.time_s),
    )


def _sizes(r: _Reader, data: dict, where: str) -> dict[str, float | None]:
    return {key: r.num(data, key, where) for key in ("peak_mb", "delta_mb", "rss_mb")}


def parse_results(data: Any, source: str = "<results>") -> Results:
    """Validate decoded JSON and return typed results; raise :class:`ResultsError` naming the first problem."""
    r = _Reader(source)
    top = r.obj(data, "top level")
    kind = top.get("kind", RESULTS_KIND)
    if kind == BASELINE_KIND:  # the baseline layer owns that format: read it the way the gate does
        try:
            baseline = baseline_from_dict(top, source)
        except BaselineError as exc:
            raise ResultsError(str(exc)) from None
        tests = [
            TestResult(nodeid=name, peak_mb=e.peak_mb, delta_mb=e.delta_mb, rss_mb=e.rss_mb)
            for name, e in baseline.entries.items()
        ]
        return Results(kind=BASELINE_KIND, source=source, tests=tests)
    version = top.get("version")
    if version != FORMAT_VERSION:
        raise r.fail("version", f"expected {FORMAT_VERSION}, got {_kind(version)} (written by another memguard?)")
    if kind != RESULTS_KIND:
        raise r.fail("kind", f"expected {RESULTS_KIND!r} or {BASELINE_KIND!r}, got {_kind(kind)}")
    if "tests" not in top and "tasks" not in top:
        raise r.fail("top level", "neither 'tests' nor 'tasks' is present; is this a memguard results file?")
    tests = []
    for i, item in enumerate(r.arr(top.get("tests", []), "tests")):
        where = f"tests[{i}]"
        test = r.obj(item, where)
        budget_data = r.obj(test.get("budget") or {}, f"{where}.budget")
        tests.append(
            TestResult(
                nodeid=r.text(test, "nodeid", where, required=True),
                **_sizes(r, test, where),
                budget=Budget(**_sizes(r, budget_data, f"{where}.budget")),
                outcome=r.text(test, "outcome", where),
                tasks=[
                    _task(r, t, f"{where}.tasks[{j}]")
                    for j, t in enumerate(r.arr(test.get("tasks", []), f"{where}.tasks"))
                ],
            )
        )
    tasks = [_task(r, t, f"tasks[{i}]") for i, t in enumerate(r.arr(top.get("tasks", []), "tasks"))]
    return Results(kind=RESULTS_KIND, source=source, tests=tests, tasks=tasks)


def load_results(path: str) -> Results:
    """Read and validate a results or baseline file (``-`` reads standard input)."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise ResultsError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_results(data, source)
