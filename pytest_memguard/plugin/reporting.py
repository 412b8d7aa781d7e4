"""What a measured call phase becomes: the report section, the JSON record, JUnit properties, the terminal summary.

Why apart from the hooks (pytest-benchmark's split): rendering and storing are plain functions of plain data, so the
controller of an xdist run renders records it received from workers exactly like records made locally.

The JSON file (``--memguard-json``) is read by ``memguard html``; keep its shape::

    {"version": 1,
     "tests": [{"nodeid", "outcome", "peak_mb" (peak above start), "delta_mb", "rss_mb" (absolute peak),
                "peak_source", "budget": {"peak_mb"?, "delta_mb"?, "rss_mb"?}, "tasks": [...], ...}],
     "tasks": [{"nodeid", "task_name", "task_id", "peak_mb", "delta_mb", "rss_mb", ...}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budgets import Budget
from .markers import BudgetResult, Figures

JSON_VERSION = 1


@dataclass
class CallOutcome:
    """One test's measured call phase: figures, every judged result, and diagnostics for over-budget tests."""

    figures: Figures
    budget: Budget
    results: list[Any] = field(default_factory=list)  # BudgetResult or any object with exceeded/line()/as_dict()
    task_results: list[tuple[Any, list[BudgetResult]]] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    diagnostics_data: dict = field(default_factory=dict)
    measurement: Any = None
    worker: str | None = None

    @property
    def exceeded(self) -> list[Any]:
        own = [r for r in self.results if r.exceeded]
        tasks = [r for _, results in self.task_results for r in results if r.exceeded]
        return own + tasks

    def failure_text(self) -> str:
        """The one clear line per exceeded budget: what the failing test's report shows as its failure."""
        return "\n".join(r.line() for r in self.exceeded)

    def section(self) -> str:
        f = self.figures
        m = self.measurement
        start = f" from {m.start_mb:.1f}MB" if m is not None and m.start_mb is not None else ""
        lines = [
            f"peak {_mb(f.peak_mb)} above start{start}, delta {_mb(f.delta_mb)} held at end, "
            f"rss peak {_mb(f.rss_mb)} ({f.peak_source})"
        ]
        if f.children_mb is not None:
            lines.append(f"children: peak {_mb(f.children_mb)} private (counted in peak and rss)")
        for result in self.results:
            lines.append(result.line())
            origin = getattr(getattr(result, "limit", None), "origin", "")
            if origin:
                lines.append(f"  budget from {origin}")
        for record, results in self.task_results:
            lines.extend(r.line() for r in results)
            if not results:
                lines.append(f"task {record.task_name}: no budget applies")
        if not self.results and not self.task_results:
            lines.append("no memory budget applies to this test")
        lines.extend(self.diagnostics)
        return "\n".join(lines)

    def record(self, nodeid: str, outcome: str) -> dict:
        """The JSON-ready figures of this test (also carried from xdist workers as ``report.memguard``)."""
        f = self.figures
        tasks = [task_record_dict(nodeid, rec, results) for rec, results in self.task_results]
        data = {
            "nodeid": nodeid,
            "outcome": outcome,
            "peak_mb": f.peak_mb,
            "delta_mb": f.delta_mb,
            "rss_mb": f.rss_mb,
            "peak_source": f.peak_source,
            "budget": self.budget.as_dict(),
            "tasks": tasks,
            "children_mb": f.children_mb,
            "exceeded": [r.line() for r in self.exceeded],
            "results": [r.as_dict() for r in self.results],
            "duration_s": getattr(self.measurement, "duration_s", None),
            "start_mb": getattr(self.measurement, "start_mb", None),
        }
        if self.worker:
            data["worker"] = self.worker
        if self.diagnostics_data:
            data["diagnostics"] = self.diagnostics_data
        return data

    def junit_properties(self) -> list[tuple[str, object]]:
        f = self.figures
        props = [("memguard_peak_mb", f.peak_mb), ("memguard_delta_mb", f.delta_mb), ("memguard_rss_mb", f.rss_mb)]
        props += [(f"memguard_budget_{k}", v) for k, v in self.budget.as_dict().items()]
        if self.exceeded:
            props.append(("memguard_exceeded", "; ".join(r.line() for r in self.exceeded)))
        return props


#: TaskMemory fields copied into the JSON task records (``memguard html`` and ``memguard compare`` read them).
TASK_FIELDS = (
    "state",
    "pool",
    "attempt",
    "hostname",
    "pid",
    "start_mb",
    "finish_mb",
    "peak_mb",
    "peak_delta_mb",
    "delta_mb",
    "peak_source",
    "duration_s",
    "checkpoints",
    "exception",
    "signal",
    "suspected_oom",
    "overlapped",
    "limit_mb",
)


def task_record_dict(nodeid: str, record: Any, results: list[Any]) -> dict:
    """A task record in the JSON shape of ``memguard html``'s TASK: ``peak_mb`` is the absolute peak (as in
    ``TaskMemory``), ``peak_delta_mb`` the peak above the task's start, ``rss_mb`` the absolute peak again."""
    data = {"nodeid": nodeid, "task_name": record.task_name, "task_id": getattr(record, "task_id", None)}
    data.update({name: getattr(record, name) for name in TASK_FIELDS if hasattr(record, name)})
    data.setdefault("peak_mb", None)
    data.setdefault("peak_delta_mb", getattr(record, "peak_delta_mb", None))
    data["rss_mb"] = data["peak_mb"]
    data["exceeded"] = [r.line() for r in results if r.exceeded]
    data["results"] = [r.as_dict() for r in results]
    return data


def _mb(value: float | None) -> str:
    return "?MB" if value is None else f"{value:.1f}MB"


def write_json(path: Path, records: Iterable[dict], extra: dict | None = None) -> None:
    """Write the session's records atomically (a reader never sees half a file); ``extra`` adds top-level keys."""
    tests = sorted(records, key=lambda r: r["nodeid"])
    tasks = [task for record in tests for task in record.get("tasks", [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"version": JSON_VERSION, "tests": tests, "tasks": tasks, **(extra or {})}, indent=1))
    os.replace(tmp, path)


def summary_lines(records: list[dict], top: int) -> list[str]:
    """The terminal summary: top tests by peak, tests within 10 % of a budget, and tests over budget."""
    lines: list[str] = []
    measured = [r for r in records if r.get("peak_mb") is not None]
    if top and measured:
        lines.append(f"top {min(top, len(measured))} test(s) by peak above start:")
        for r in sorted(measured, key=lambda r: r["peak_mb"], reverse=True)[:top]:
            budget = r.get("budget", {}).get("peak_mb")
            note = f"  (budget {budget:.1f}MB)" if budget is not None else ""
            lines.append(f"  {r['peak_mb']:9.1f}MB  {r['nodeid']}{note}")
    near = [(r, res) for r in records for res in r.get("results", []) if not res["exceeded"] and _near(res)]
    if near:
        lines.append("close to budget (within 10%):")
        for r, res in near:
            lines.append(
                f"  {r['nodeid']}: {res['kind']} {res['used_mb']:.1f}MB of {res['limit_name']} {res['limit_mb']:.1f}MB"
            )
    lines.extend(task_summary_lines(records, top))
    over = [r for r in records if r.get("exceeded")]
    if over:
        lines.append(f"over budget: {len(over)} test(s)")
        for r in over:
            for line in r["exceeded"]:
                lines.append(f"  {r['nodeid']}: {line}")
    return lines


def task_summary_lines(records: list[dict], top: int) -> list[str]:
    """Celery task executions of the session: how many per state and mode, and the top ``top`` by peak above start."""
    tasks = [t for r in records for t in r.get("tasks", [])]
    if not tasks:
        return []
    counts: dict[str, int] = {}
    for t in tasks:
        key = f"{t.get('state') or '?'} {t.get('pool') or '?'}"
        counts[key] = counts.get(key, 0) + 1
    lines = [f"celery tasks: {len(tasks)} execution(s) ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})"]
    measured = [t for t in tasks if t.get("peak_delta_mb") is not None]
    for t in sorted(measured, key=lambda t: t["peak_delta_mb"], reverse=True)[: top or 0]:
        budget = next((res for res in t.get("results", []) if res.get("kind") == "peak"), None)
        note = f"  (budget {budget['limit_mb']:.1f}MB)" if budget else ""
        lines.append(
            f"  {t['peak_delta_mb']:9.1f}MB  {t['task_name']} [{t.get('state')}, {t.get('pool')}] "
            f"in {t['nodeid']}{note}"
        )
    return lines


def _near(result: dict) -> bool:
    used, limit = result.get("used_mb"), result.get("limit_mb")
    return used is not None and limit and used >= 0.9 * limit
