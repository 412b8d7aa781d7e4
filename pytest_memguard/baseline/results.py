"""From measurements and results files to baseline entries — one mapping, shared by the plugin and the CLI.

The plugin's ``--memguard-json`` results (``{"version": 1, "tests": [...], "tasks": [...]}``) and a baseline name
the same three figures differently; this is the one place that says which is which:

==========  =================================  ===================================================
entry       test record                        task record (and :class:`Measurement`)
==========  =================================  ===================================================
peak_mb     ``peak_mb`` (peak above start)     ``peak_delta_mb`` (peak above start)
delta_mb    ``delta_mb``                       ``delta_mb``
rss_mb      ``rss_mb`` (absolute peak RSS)     ``peak_mb`` (absolute peak RSS)
==========  =================================  ===================================================

A task runs many times in a session; its entry keeps the largest figure of each metric, because a gate protects
the worst call (a task that once needed 300 MB will need it again in production).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import BaselineError
from .format import KIND as BASELINE_KIND
from .format import TASK_PREFIX, Entry, baseline_from_dict

RESULTS_KIND = "memguard-results"


def task_entry_name(task_name: str) -> str:
    """The baseline name of a Celery task: ``task:<name>``."""
    return f"{TASK_PREFIX}{task_name}"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _get(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, Mapping) else getattr(record, key, None)


def entry_from_task(record: Any, *, runs: int | None = None) -> Entry:
    """An entry from a task record: a results-file dict, a :class:`~pytest_memguard.runtime.Measurement` or its
    ``as_dict()``."""
    return Entry(
        peak_mb=_num(_get(record, "peak_delta_mb")),
        delta_mb=_num(_get(record, "delta_mb")),
        rss_mb=_num(_get(record, "peak_mb")),
        kind="task",
        runs=runs,
    )


def entry_from_test(record: Any, *, runs: int | None = None) -> Entry:
    """An entry from a test record of the results file (``peak_mb`` is the peak above start there)."""
    peak = _get(record, "peak_mb")
    return Entry(
        peak_mb=_num(peak),
        delta_mb=_num(_get(record, "delta_mb")),
        rss_mb=_num(_get(record, "rss_mb")),
        kind="test",
        runs=runs,
    )


def entry_from_measurement(measurement: Any, *, kind: str = "test", runs: int | None = None) -> Entry:
    """An entry from a runtime ``Measurement`` (or its dict): peak above start, delta, absolute peak RSS."""
    entry = entry_from_task(measurement, runs=runs)
    return Entry(entry.peak_mb, entry.delta_mb, entry.rss_mb, kind=kind, runs=runs)


def _worst(a: Entry, b: Entry) -> Entry:
    def hi(x: float | None, y: float | None) -> float | None:
        return y if x is None else x if y is None else max(x, y)

    return Entry(hi(a.peak_mb, b.peak_mb), hi(a.delta_mb, b.delta_mb), hi(a.rss_mb, b.rss_mb), kind=a.kind)


def add_task_records(entries: dict[str, Entry], records: Iterable[Any]) -> dict[str, Entry]:
    """Fold task records into ``entries`` as ``task:<name>``, keeping each metric's worst value. Returns it."""
    for record in records:
        name = _get(record, "task_name")
        if not name:
            continue
        key = task_entry_name(str(name))
        entry = entry_from_task(record)
        entries[key] = _worst(entries[key], entry) if key in entries else entry
    return entries


def entries_from_results(data: Any, source: str = "<results>") -> dict[str, Entry]:
    """Baseline entries from a decoded ``--memguard-json`` results document (tests by node id, tasks by name)."""
    if not isinstance(data, Mapping) or ("tests" not in data and "tasks" not in data):
        raise BaselineError(f"{source}: not a memguard results file (no 'tests' or 'tasks' list)")
    if data.get("version") != 1:
        raise BaselineError(f"{source}: results format version {data.get('version')!r} is not 1")
    tests, tasks = data.get("tests") or [], data.get("tasks") or []
    if not isinstance(tests, list) or not isinstance(tasks, list):
        raise BaselineError(f"{source}: 'tests' and 'tasks' must be lists")
    entries: dict[str, Entry] = {}
    nested: list[Any] = []
    for i, test in enumerate(tests):
        nodeid = _get(test, "nodeid")
        if not isinstance(nodeid, str) or not nodeid:
            raise BaselineError(f"{source}: tests[{i}] has no 'nodeid'")
        entries[nodeid] = entry_from_test(test)
        nested.extend(_get(test, "tasks") or [])
    # Session-level task records, or (older/partial files) only the ones nested in tests; never both, which
    # would count a call twice (harmless for a max, but keeps the rule simple).
    add_task_records(entries, tasks if tasks else nested)
    return entries


def load_entries(path: str | os.PathLike) -> tuple[dict[str, Entry], dict | None]:
    """Read a baseline *or* a results file: ``(entries, machine profile or None)``. For ``memguard compare``."""
    source = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BaselineError(f"{source}: no such file") from None
    except OSError as exc:
        raise BaselineError(f"{source}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BaselineError(f"{source}: not a memguard baseline or results file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}") from None
    if isinstance(data, Mapping) and data.get("kind") == BASELINE_KIND:
        baseline = baseline_from_dict(data, source)
        return baseline.entries, baseline.machine or None
    is_results = isinstance(data, Mapping) and ("tests" in data or "tasks" in data)
    if is_results and data.get("kind", RESULTS_KIND) == RESULTS_KIND:
        machine = data.get("machine")
        return entries_from_results(data, source), dict(machine) if isinstance(machine, Mapping) else None
    kind = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
    raise BaselineError(
        f"{source}: not a memguard baseline or results file (kind {kind!r}, no 'entries' or 'tests'); "
        "pass a file written by --memory-baseline-save or --memguard-json"
    )
