"""Budgets: what they are, how they are written, and which one applies to a test or a task.

Three kinds, judged on resident memory (RSS) of the test's call phase:

- ``peak``  (``max_peak_mb``): peak RSS above the RSS at the start of the call phase;
- ``delta`` (``max_delta_mb``): RSS still held at the end of the call phase, after collecting garbage;
- ``rss``   (``max_rss_mb``): the absolute peak RSS of the process, for worker/OOM limits.

Where budgets come from
-----------------------
Markers ``@pytest.mark.max_peak_mb(mb, *, task=None)`` (and ``max_delta_mb``, ``max_rss_mb``) on functions, classes,
modules (``pytestmark``) or ``pytest.param(..., marks=...)``; pytest-memray's ``limit_memory("24 MB")`` (a peak) and
``limit_leaks("1 MB")`` (a delta) when pytest-memray is not active; and a *spec* given by ``--memory-budget=SPEC`` or
the ini key ``memory_budget``. A SPEC is one of:

- a number or a size: ``200``, ``"200MB"``, ``"1.5GiB"`` — a peak budget in MB;
- ``peak=200MB,delta=10MB,rss=2GB`` — any subset of the three kinds;
- a path to a budgets file (``.toml`` or ``.json``).

The budgets file
----------------
TOML (JSON has the same shape, as nested objects)::

    [default]                       # every test not matched below (optional)
    peak = "200MB"
    delta = "10MB"

    [tests]                         # node-id patterns (fnmatch, relative to the rootdir); first match wins
    "tests/test_reports.py::*" = { peak = "1GB" }
    "tests/test_io.py::test_upload[big]" = "500MB"     # a bare size is a peak budget

    [tasks]                         # Celery task-name patterns; first match wins
    "app.tasks.render_*" = { peak = "300MB", rss = "2GB" }

A matching ``[tests]`` entry fills the kinds it names and the ``[default]`` fills the rest. Patterns are tried
exactly first, so node ids with ``[`` (parametrized cases) need no escaping.

Precedence is resolved per kind by :func:`resolve_item_budget`; the whole rule is written in its docstring.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..runtime.units import MB, SizeError, parse_size

KINDS = ("peak", "delta", "rss")

#: Our markers and pytest-memray's, with the kind of budget each one sets.
MARKER_KINDS = {"max_peak_mb": "peak", "max_delta_mb": "delta", "max_rss_mb": "rss"}
MEMRAY_MARKER_KINDS = {"limit_memory": "peak", "limit_leaks": "delta"}
KIND_MARKER = {kind: name for name, kind in MARKER_KINDS.items()}

_SPEC_KEYS = {
    "peak": "peak",
    "max_peak_mb": "peak",
    "delta": "delta",
    "max_delta_mb": "delta",
    "rss": "rss",
    "max_rss_mb": "rss",
}


class BudgetError(ValueError):
    """A budget that cannot be read; the message says what was given, where, and how to write it instead."""


@dataclass(frozen=True)
class Limit:
    """One limit: ``mb`` (2**20 bytes), the ``name`` shown in the failure line and where it was set (``origin``)."""

    mb: float
    name: str
    origin: str


@dataclass(frozen=True)
class Budget:
    """Up to one :class:`Limit` per kind; a kind that is ``None`` is not judged."""

    peak: Limit | None = None
    delta: Limit | None = None
    rss: Limit | None = None

    def get(self, kind: str) -> Limit | None:
        return getattr(self, kind)

    def is_empty(self) -> bool:
        return self.peak is None and self.delta is None and self.rss is None

    def filled_from(self, fallback: Budget) -> Budget:
        """This budget with the kinds it lacks taken from ``fallback``."""
        return Budget(**{kind: self.get(kind) or fallback.get(kind) for kind in KINDS})

    def as_dict(self) -> dict[str, float]:
        """``{"peak_mb": ..., "delta_mb": ..., "rss_mb": ...}`` with only the kinds that are set (the JSON shape)."""
        return {f"{kind}_mb": limit.mb for kind in KINDS if (limit := self.get(kind)) is not None}


EMPTY = Budget()


def _match(pattern: str, name: str) -> bool:
    return pattern == name or fnmatch.fnmatchcase(name, pattern)


@dataclass(frozen=True)
class BudgetSet:
    """A parsed SPEC: a default budget for tests plus ordered (pattern, budget) entries for tests and tasks."""

    default: Budget = EMPTY
    tests: tuple[tuple[str, Budget], ...] = ()
    tasks: tuple[tuple[str, Budget], ...] = ()
    source: str = ""

    def is_empty(self) -> bool:
        return self.default.is_empty() and not self.tests and not self.tasks

    def for_test(self, nodeid: str) -> Budget:
        for pattern, budget in self.tests:
            if _match(pattern, nodeid):
                return budget.filled_from(self.default)
        return self.default

    def for_task(self, task_name: str) -> Budget:
        for pattern, budget in self.tasks:
            if _match(pattern, task_name):
                return budget
        return EMPTY

    def describe(self) -> str:
        """One line for the report header."""
        parts = [f"{kind}={limit.mb:g}MB" for kind in KINDS if (limit := self.default.get(kind))]
        text = ",".join(parts) if parts else "no default"
        extra = []
        if self.tests:
            extra.append(f"{len(self.tests)} test pattern(s)")
        if self.tasks:
            extra.append(f"{len(self.tasks)} task pattern(s)")
        if extra:
            text += f" + {', '.join(extra)}"
        return f"{text} (from {self.source})" if self.source else text


# -- parsing ----------------------------------------------------------------------------------------------------------
def parse_mb(value: Any, *, what: str) -> float:
    """A size (number of MB or a string with a unit) as MB, or :class:`BudgetError` naming ``what``."""
    try:
        return parse_size(value, "MB", what=what) / MB
    except SizeError as exc:
        raise BudgetError(str(exc)) from None


def _limit(kind: str, value: Any, *, origin: str, name: str | None = None) -> Limit:
    return Limit(parse_mb(value, what=f"{origin}: {kind}"), name or KIND_MARKER[kind], origin)


def _budget_from_mapping(entry: Any, *, origin: str) -> Budget:
    """``{"peak": "200MB", ...}`` or a bare size (a peak budget) → :class:`Budget`."""
    if isinstance(entry, (str, int, float)) and not isinstance(entry, bool):
        return Budget(peak=_limit("peak", entry, origin=origin))
    if not isinstance(entry, Mapping):
        raise BudgetError(
            f'{origin}: expected a size or a table like {{ peak = "200MB", delta = "10MB" }}, got {entry!r}'
        )
    limits: dict[str, Limit] = {}
    for key, value in entry.items():
        kind = _SPEC_KEYS.get(str(key).strip().lower())
        if kind is None:
            raise BudgetError(f"{origin}: unknown budget kind {key!r}; use peak, delta or rss")
        limits[kind] = _limit(kind, value, origin=origin)
    return Budget(**limits)


def parse_inline_spec(spec: str, *, origin: str) -> BudgetSet:
    """``200`` / ``"200MB"`` (peak) or ``peak=200MB,delta=10MB,rss=2GB``."""
    text = spec.strip()
    if "=" not in text:
        return BudgetSet(default=Budget(peak=_limit("peak", text, origin=origin)), source=origin)
    limits: dict[str, Limit] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        kind = _SPEC_KEYS.get(key.strip().lower())
        if not sep or kind is None:
            raise BudgetError(
                f"{origin}: cannot read {part.strip()!r} in {spec!r}; write peak=SIZE, delta=SIZE and/or rss=SIZE "
                "separated by commas (e.g. peak=200MB,delta=10MB), a single size, or a path to a .toml/.json file"
            )
        limits[kind] = _limit(kind, value.strip(), origin=origin)
    return BudgetSet(default=Budget(**limits), source=origin)


def load_budget_file(path: Path, *, origin: str) -> BudgetSet:
    """Read a budgets file (format in the module docstring); every problem is a :class:`BudgetError`."""
    where = f"budgets file {path} ({origin})"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BudgetError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise BudgetError(f"{where}: not valid {kind}: {exc}") from None
    if not isinstance(data, Mapping):
        raise BudgetError(f"{where}: the top level must be a table/object with [default], [tests] and/or [tasks]")
    unknown = set(data) - {"default", "tests", "tasks", "version"}
    if unknown:
        raise BudgetError(
            f"{where}: unknown section(s) {', '.join(sorted(map(repr, unknown)))}; use default, tests and tasks"
        )
    default = _budget_from_mapping(data.get("default", {}), origin=f"{where} [default]")
    sections: dict[str, tuple[tuple[str, Budget], ...]] = {}
    for section in ("tests", "tasks"):
        entries = data.get(section, {})
        if not isinstance(entries, Mapping):
            raise BudgetError(f"{where}: [{section}] must map patterns to budgets, got {type(entries).__name__}")
        sections[section] = tuple(
            (str(pattern), _budget_from_mapping(entry, origin=f"{where} [{section}] {pattern!r}"))
            for pattern, entry in entries.items()
        )
    return BudgetSet(default=default, tests=sections["tests"], tasks=sections["tasks"], source=str(path))


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith((".toml", ".json")) or os.sep in text or "/" in text


def parse_spec(spec: str | None, *, origin: str, base_dirs: Iterable[Path] = ()) -> BudgetSet:
    """Parse a ``--memory-budget``/``memory_budget`` SPEC; relative file paths are tried against ``base_dirs``."""
    if spec is None or not str(spec).strip():
        return BudgetSet()
    text = str(spec).strip()
    if _looks_like_path(text):
        candidates = [Path(text)] if Path(text).is_absolute() else [Path(d) / text for d in base_dirs] or [Path(text)]
        for candidate in candidates:
            if candidate.is_file():
                return load_budget_file(candidate, origin=origin)
        tried = ", ".join(str(c) for c in candidates)
        raise BudgetError(
            f"{origin}: budgets file {text!r} not found (looked at {tried}); give an existing .toml/.json path, "
            "a size such as 200MB, or peak=200MB,delta=10MB"
        )
    return parse_inline_spec(text, origin=origin)


# -- markers ----------------------------------------------------------------------------------------------------------
def _marker_value(marker: Any, *, nodeid: str, memray: bool) -> tuple[Any, str | None]:
    """The size and ``task`` of one marker, or :class:`BudgetError` saying how to write it."""
    name = marker.name
    usage = (
        f'@pytest.mark.{name}("24 MB")'
        if memray
        else f'@pytest.mark.{name}(200) or @pytest.mark.{name}("1.5GiB", task="app.tasks.*")'
    )
    args = list(marker.args)
    kwargs = dict(marker.kwargs)
    task = None
    if memray:
        kwargs.pop("current_thread_only", None)  # pytest-memray options with no RSS meaning
        kwargs.pop("filter_fn", None)
        key = "memory_limit" if name == "limit_memory" else "location_limit"
        if key in kwargs:
            args.append(kwargs.pop(key))
    else:
        task = kwargs.pop("task", None)
        if "mb" in kwargs:
            args.append(kwargs.pop("mb"))
    if kwargs:
        raise BudgetError(
            f"{nodeid}: @pytest.mark.{name} got unexpected keyword(s) {', '.join(sorted(kwargs))}; write {usage}"
        )
    if len(args) != 1:
        raise BudgetError(f"{nodeid}: @pytest.mark.{name} takes exactly one size, got {len(args)}; write {usage}")
    if task is not None and (not isinstance(task, str) or not task.strip()):
        raise BudgetError(f"{nodeid}: @pytest.mark.{name} task= must be a task name or pattern string, got {task!r}")
    return args[0], task


@dataclass(frozen=True)
class ResolvedBudget:
    """What applies to one test: its own budget, and ordered (task pattern, budget) entries for its tasks."""

    test: Budget = EMPTY
    tasks: tuple[tuple[str, Budget], ...] = ()
    config: BudgetSet = field(default_factory=BudgetSet)

    def for_task(self, task_name: str) -> Budget:
        """Per kind: the closest ``task=`` marker whose pattern matches, else the budgets file's ``[tasks]``."""
        limits: dict[str, Limit] = {}
        for pattern, entry in self.tasks:
            if _match(pattern, task_name):
                for kind in KINDS:
                    if (limit := entry.get(kind)) is not None:
                        limits.setdefault(kind, limit)
        return Budget(**limits).filled_from(self.config.for_task(task_name))

    def has_any(self) -> bool:
        return not self.test.is_empty() or bool(self.tasks) or bool(self.config.tasks)


def resolve_item_budget(item: Any, config_budgets: BudgetSet, *, honor_memray: bool) -> ResolvedBudget:
    """Resolve the budget of one test item. Precedence, per kind (peak, delta, rss) independently:

    1. the closest marker of that kind without ``task=`` — a ``pytest.param(marks=...)`` or the function beats its
       class, which beats the module's ``pytestmark``; pytest-memray's ``limit_memory`` (peak) and ``limit_leaks``
       (delta) count as markers of their kind when ``honor_memray`` (pytest-memray is not active);
    2. the first ``[tests]`` pattern of the budgets file that matches the node id;
    3. the SPEC's default (``--memory-budget``; the ini key ``memory_budget`` only when the option is not given —
       the caller passes whichever applies as ``config_budgets``).

    So ``--memory-budget=delta=10MB`` and ``@pytest.mark.max_peak_mb(500)`` give the test both limits. Markers with
    ``task=`` never budget the test itself; they go to :meth:`ResolvedBudget.for_task`, ahead of the file's
    ``[tasks]``. A malformed marker raises :class:`BudgetError` naming the test.
    """
    nodeid = item.nodeid
    own: dict[str, Limit] = {}
    tasks: list[tuple[str, Budget]] = []
    kinds = dict(MARKER_KINDS)
    if honor_memray:
        kinds.update(MEMRAY_MARKER_KINDS)
    for marker in item.iter_markers():  # closest first
        kind = kinds.get(marker.name)
        if kind is None:
            continue
        memray = marker.name in MEMRAY_MARKER_KINDS
        value, task = _marker_value(marker, nodeid=nodeid, memray=memray)
        where = f"@pytest.mark.{marker.name} on {nodeid}"
        limit = Limit(parse_mb(value, what=where), marker.name, where)
        if task is None:
            own.setdefault(kind, limit)
        else:
            tasks.append((task.strip(), Budget(**{kind: limit})))
    test_budget = Budget(**own).filled_from(config_budgets.for_test(nodeid))
    return ResolvedBudget(test=test_budget, tasks=tuple(tasks), config=config_budgets)
