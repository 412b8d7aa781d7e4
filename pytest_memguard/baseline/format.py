"""The baseline file format, and nothing else: turning JSON into :class:`Baseline` and back.

A baseline is what one run measured, kept to judge later runs against (``--memory-baseline-save``)::

    {"version": 1,
     "kind": "memguard-baseline",
     "machine": {"platform": "Linux-6.18-x86_64", "python": "3.11.9", "implementation": "CPython",
                 "arch": "x86_64", "cpu_count": 2, "total_ram_mb": 7982.0, "cgroup_limit_mb": null,
                 "hostname": "ci-7"},
     "commit": {"id": "05c88d9…", "dirty": false},          # absent outside a git checkout
     "created_at": "2025-01-31T12:00:00+00:00",             # UTC, ISO 8601
     "entries": {
        "tests/test_x.py::test_big[2]": {"peak_mb": 52.1, "delta_mb": 0.3, "rss_mb": 180.4, "kind": "test",
                                         "runs": 3},
        "task:proj.tasks.resize":       {"peak_mb": 12.0, "delta_mb": 0.0, "rss_mb": 95.2, "kind": "task"}}}

Entry names are pytest node ids, or ``task:<celery task name>`` for a Celery task. Metrics, all MB (2**20 bytes),
``null`` when unknown:

* ``peak_mb``  — peak RSS above the RSS at the start of the work (what ``max_peak_mb`` budgets);
* ``delta_mb`` — RSS still held at the end, minus the start (what ``max_delta_mb`` budgets);
* ``rss_mb``   — the process's absolute peak RSS during the work (what ``max_rss_mb`` budgets);
* ``runs``     — how many repeats the figures were chosen from (``--memory-repeat``), when more than one.

Why ``version`` *and* ``kind``: a JSON file of someone else's (or of a newer memguard) must be recognised as not
ours and reported, never half-read and then overwritten by a save.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BaselineError

FORMAT_VERSION = 1
KIND = "memguard-baseline"
METRICS: tuple[str, ...] = ("peak", "delta", "rss")
ENTRY_KINDS: tuple[str, ...] = ("test", "task")
TASK_PREFIX = "task:"


@dataclass(frozen=True)
class Entry:
    """The figures of one test or task. ``None`` is an unknown figure (never compared)."""

    peak_mb: float | None = None
    delta_mb: float | None = None
    rss_mb: float | None = None
    kind: str = "test"
    runs: int | None = None

    def metric(self, name: str) -> float | None:
        """The figure of metric ``name`` (``peak``, ``delta`` or ``rss``)."""
        return getattr(self, f"{name}_mb")

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"peak_mb": self.peak_mb, "delta_mb": self.delta_mb, "rss_mb": self.rss_mb}
        data["kind"] = self.kind
        if self.runs is not None:
            data["runs"] = self.runs
        return data


@dataclass
class Baseline:
    """A whole baseline file: the figures and where they were measured."""

    entries: dict[str, Entry] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    commit: dict | None = None
    created_at: str | None = None
    source: str | None = None  # the file it was read from, for messages

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"version": FORMAT_VERSION, "kind": KIND, "machine": dict(self.machine)}
        if self.commit is not None:
            data["commit"] = dict(self.commit)
        data["created_at"] = self.created_at
        data["entries"] = {name: self.entries[name].to_dict() for name in sorted(self.entries)}
        return data


def _number(value: Any, where: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BaselineError(f"{source}: {where} must be a number of MB or null, got {value!r}")
    return float(value)


def entry_from_dict(name: str, data: Any, source: str = "<baseline>") -> Entry:
    """Read one entry; ``kind`` defaults from the name (``task:`` prefix) so hand-written files stay short."""
    where = f"entries[{name!r}]"
    if not isinstance(data, Mapping):
        raise BaselineError(f"{source}: {where} must be an object with peak_mb/delta_mb/rss_mb, got {data!r:.60}")
    kind = data.get("kind") or ("task" if name.startswith(TASK_PREFIX) else "test")
    if kind not in ENTRY_KINDS:
        raise BaselineError(f"{source}: {where}.kind must be 'test' or 'task', got {kind!r}")
    runs = data.get("runs")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise BaselineError(f"{source}: {where}.runs must be a whole number >= 1, got {runs!r}")
    return Entry(
        peak_mb=_number(data.get("peak_mb"), f"{where}.peak_mb", source),
        delta_mb=_number(data.get("delta_mb"), f"{where}.delta_mb", source),
        rss_mb=_number(data.get("rss_mb"), f"{where}.rss_mb", source),
        kind=kind,
        runs=runs,
    )


def coerce_entries(entries: Mapping[str, Entry | Mapping], source: str = "<entries>") -> dict[str, Entry]:
    """Accept entries as :class:`Entry` objects or plain dicts (what a worker sends over xdist's channel)."""
    out: dict[str, Entry] = {}
    for name, value in entries.items():
        if not isinstance(name, str) or not name:
            raise BaselineError(f"{source}: entry names must be non-empty strings, got {name!r}")
        out[name] = value if isinstance(value, Entry) else entry_from_dict(name, value, source)
    return out


def baseline_from_dict(data: Any, source: str = "<baseline>") -> Baseline:
    """Validate decoded JSON and return a :class:`Baseline`; a foreign or newer file raises :class:`BaselineError`."""
    if not isinstance(data, Mapping):
        raise BaselineError(f"{source}: not a memguard baseline (top level is {type(data).__name__}, not an object)")
    kind = data.get("kind")
    if kind != KIND:
        raise BaselineError(
            f"{source}: not a memguard baseline (kind is {kind!r}, expected {KIND!r}); "
            "point --memory-baseline at another path or delete the file"
        )
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise BaselineError(
            f"{source}: baseline format version {version!r} is not {FORMAT_VERSION}; "
            "upgrade pytest-memguard or save a new baseline to another path"
        )
    entries = data.get("entries", {})
    if not isinstance(entries, Mapping):
        raise BaselineError(f"{source}: 'entries' must be an object mapping names to figures")
    machine = data.get("machine") or {}
    if not isinstance(machine, Mapping):
        raise BaselineError(f"{source}: 'machine' must be an object")
    commit = data.get("commit")
    if commit is not None and not isinstance(commit, Mapping):
        raise BaselineError(f"{source}: 'commit' must be an object with 'id' and 'dirty'")
    return Baseline(
        entries={str(name): entry_from_dict(str(name), value, source) for name, value in entries.items()},
        machine=dict(machine),
        commit=dict(commit) if commit is not None else None,
        created_at=data.get("created_at"),
        source=source,
    )
