"""``TaskMemory``: what one execution of a Celery task used, as it travels from the worker back to the caller.

Its attribute names are the monitor's (:class:`pytest_memguard.runtime.Measurement`) plus what only Celery knows
(``state``, ``hostname``, ``pool``, ``attempt``) and what only a killed worker's parent knows (``signal``,
``suspected_oom``). It is plain data: JSON in, JSON out, so any result backend can carry it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from json import encoder as json_encoder
from typing import Any, NamedTuple

from ..runtime.units import format_mb

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
WORKER_LOST = "WORKER_LOST"
#: States after which no further execution of the task will follow (RETRY is followed by another attempt).
TERMINAL_STATES = frozenset({SUCCESS, FAILURE, WORKER_LOST})

RECORD_VERSION = 1


@dataclass
class TaskMemory:
    """One execution of one task. ``*_mb`` are MB (2**20 bytes); ``None`` means unknown.

    - ``peak_delta_mb``: peak above the start RSS, i.e. what the task added at its worst (the figure to budget).
    - ``peak_source``: where the peak came from (``kernel-hwm`` exact; ``sampled@10ms`` may miss short spikes).
    - ``overlapped``: how many other monitored tasks ran in the same process at the same time. RSS is per process,
      so when this is non-zero (threads/gevent pools) the figures are the process's, shared between those tasks.
    - ``attempt``: ``request.retries`` of this execution (0 for the first run); a task retried three times has
      records for attempts 0, 1, 2 (``RETRY``) and 3 (final state).
    - ``gc``: what the after-task GC policy did (``collected``, ``objects_collected``, ``freed_mb``).
    - ``signal`` / ``suspected_oom``: for ``WORKER_LOST`` only; the figures are then the last ones the child
      persisted before it died (its START or last checkpoint), ``finish_mb`` is ``None``.
    """

    task_id: str
    task_name: str
    state: str
    pid: int | None = None
    hostname: str | None = None
    pool: str | None = None
    attempt: int = 0
    start_mb: float | None = None
    finish_mb: float | None = None
    peak_mb: float | None = None
    delta_mb: float | None = None
    peak_delta_mb: float | None = None
    peak_source: str | None = None
    heap: dict | None = None
    checkpoints: list[dict] = field(default_factory=list)
    gc: dict = field(default_factory=dict)
    started_at: float | None = None
    duration_s: float | None = None
    overlapped: int = 0
    limit_mb: float | None = None
    process_percent: float | None = None
    exception: str | None = None
    signal: str | None = None
    suspected_oom: bool | None = None
    run_tag: str | None = None
    children: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    version: int = RECORD_VERSION

    @property
    def terminal(self) -> bool:
        """True when no further attempt of this task follows this record."""
        return self.state in TERMINAL_STATES

    def as_dict(self) -> dict:
        # Shallow on purpose: dataclasses.asdict deep-copies every checkpoint (~100 µs per record measured). The
        # instance dict holds exactly the fields, in field order (set by __init__), unless someone added attributes.
        values = self.__dict__
        if len(values) == len(_FIELD_NAMES):
            return values.copy()
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @staticmethod
    def blank_fields() -> dict[str, Any]:
        """Every field, in field order, set to ``None``: fill it in and pass it to :meth:`from_fields`."""
        return _BLANK_FIELDS.copy()

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> TaskMemory:
        """Build from a dict holding every field, in field order (which :meth:`to_line` relies on), without
        ``__init__``'s argument handling (the worker builds one record per task). Raises ``ValueError`` if a field
        is missing, unknown or out of order."""
        if tuple(values) != _FIELD_NAMES:
            raise ValueError(
                f"TaskMemory.from_fields needs exactly the fields, in field order, {_FIELD_NAMES}; got {tuple(values)}"
            )
        record = cls.__new__(cls)
        record.__dict__.update(values)
        return record

    def to_json(self) -> str:
        return _encode(self.as_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskMemory:
        """Build from a dict, ignoring keys this version does not know (records written by a newer worker)."""
        known = {f.name for f in fields(cls)}
        missing = {"task_id", "task_name", "state"} - set(data)
        if missing:
            raise ValueError(f"not a TaskMemory record: missing {', '.join(sorted(missing))} in {sorted(data)[:8]}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskMemory:
        return cls.from_dict(json.loads(text))

    def to_line(self) -> str:
        """The compact form written to journals, on the task's path: a JSON array of the values in field order, led
        by the layout number (``[2, "<task_id>", …]``), with each *counted* figure as a whole number of its unit
        (:data:`LineLayout.units`: RSS figures and the limit in KiB, ``started_at`` in µs, ``duration_s`` in ns,
        ``process_percent`` in tenths) whenever that count reads back to exactly the same float; any other value
        (a figure a user set by hand to 30.1 MB, say) is written as it is.

        Why: per record, the 28 key strings and the shortest repr of each float were most of the cost (a float's
        repr is ~8,700 instructions, an int's a few hundred). The monitor produces exactly such counts (RSS in
        pages and KiB, ``time_ns`` and ``perf_counter_ns`` clocks, percentages to 0.1), so a worker's lines carry
        no float at all. :meth:`from_line` reads every layout back exactly, and also reads a ``to_json`` line."""
        values = self.__dict__
        if tuple(values) == _FIELD_NAMES:  # built by __init__ or from_fields: the values are in field order
            line = [LINE_LAYOUT, *values.values()]
        else:
            line = [LINE_LAYOUT, *(getattr(self, name) for name in _FIELD_NAMES)]
        for position, per_unit in _COUNTED_POSITIONS:
            value = line[position]
            if value.__class__ is float or value.__class__ is int:  # not bool, not None
                try:
                    count = round(value * per_unit)
                except (ValueError, OverflowError):  # nan, inf: written as they are
                    continue
                if count / per_unit == value:
                    line[position] = count
                elif value.__class__ is int:  # an int that is no whole count would read back divided
                    line[position] = float(value)
        return _encode_line(line)

    @classmethod
    def from_line(cls, text: str | bytes) -> TaskMemory:
        """Read a :meth:`to_line` line of any layout (or a :meth:`to_json` object); ``ValueError`` for anything
        else."""
        data = json.loads(text)
        if isinstance(data, dict):
            return cls.from_dict(data)
        if not isinstance(data, list) or not data:
            raise ValueError(f"not a TaskMemory line: {str(text)[:80]!r}")
        layout = _LINE_LAYOUTS.get(data[0])
        if layout is None or len(data) != len(layout.names) + 1:
            raise ValueError(f"not a TaskMemory line of a known layout (layout {data[0]!r}, {len(data)} values)")
        values = dict(zip(layout.names, data[1:], strict=True))
        for name, per_unit in layout.units:
            if values[name].__class__ is int:  # a whole count of the unit (a float was written as it was)
                values[name] /= per_unit
        return cls.from_dict(values)

    def summary(self) -> str:
        """One line in the seed's spirit, for reports: ``name[id] STATE peak=…MB (+…MB over start) …``."""
        text = (
            f"{self.task_name}[{self.task_id}] {self.state}: peak={format_mb(self.peak_mb)} "
            f"(peak_delta={format_mb(self.peak_delta_mb, signed=True)}, delta={format_mb(self.delta_mb, signed=True)})"
            f" pool={self.pool}"
        )
        if self.overlapped:
            text += f" overlapped={self.overlapped}"
        if self.state == WORKER_LOST:
            text += f" signal={self.signal} suspected_oom={self.suspected_oom}"
        return text


_FIELD_NAMES = tuple(f.name for f in fields(TaskMemory))
_BLANK_FIELDS = dict.fromkeys(_FIELD_NAMES)


class LineLayout(NamedTuple):
    """How a journal line is laid out: the field names in order, and the figures written as whole counts of a
    unit, as ``(field, units per field unit)`` (``("start_mb", 1024)``: KiB per MB)."""

    names: tuple[str, ...]
    units: tuple[tuple[str, float], ...]


_NAMES_1 = (
    "task_id", "task_name", "state", "pid", "hostname", "pool", "attempt", "start_mb", "finish_mb", "peak_mb",
    "delta_mb", "peak_delta_mb", "peak_source", "heap", "checkpoints", "gc", "started_at", "duration_s",
    "overlapped", "limit_mb", "process_percent", "exception", "signal", "suspected_oom", "run_tag",
    "children", "errors", "version",
)  # fmt: skip
_KIB = tuple((name, 1024) for name in ("start_mb", "finish_mb", "peak_mb", "delta_mb", "peak_delta_mb", "limit_mb"))
#: Each journal line layout: a line is read by the layout it names, so journals written by an older worker stay
#: readable. Adding, removing or reordering a field, or counting one in a unit, means a new layout number here.
_LINE_LAYOUTS: dict[int, LineLayout] = {
    1: LineLayout(names=_NAMES_1, units=_KIB),
    2: LineLayout(names=_NAMES_1, units=(*_KIB, ("started_at", 1e6), ("duration_s", 1e9), ("process_percent", 10))),
}
LINE_LAYOUT = 2
if _LINE_LAYOUTS[LINE_LAYOUT].names != _FIELD_NAMES:  # a field changed without a new line layout: fail at import
    raise RuntimeError(f"TaskMemory fields {_FIELD_NAMES} differ from line layout {LINE_LAYOUT}: add a new layout")
_COUNTED_POSITIONS = tuple((1 + _FIELD_NAMES.index(name), unit) for name, unit in _LINE_LAYOUTS[LINE_LAYOUT].units)
if LINE_LAYOUT != 2:  # SuccessLines writes layout 2 as text
    raise RuntimeError("SuccessLines writes journal line layout 2: update it with the layout")
# One encoder for every record: json.dumps with arguments builds a new JSONEncoder per call (~3 µs per record).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _line_encoder() -> Callable[[Any], str]:
    """``JSONEncoder.encode`` without its per-call set-up: json's C encoder, made once (``encode`` builds it on
    every call, ~6k instructions), without the circular-reference check a record (a tree) does not need. Falls back
    to :data:`_encode` where json has no C accelerator."""
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return _encode
    iterencode = make(None, str, json_encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda value: "".join(iterencode(value, 0))


_encode_line = _line_encoder()
_quote = json_encoder.encode_basestring_ascii  # a str as JSON text (json's C function where it has one)


class SuccessLines:
    """Journal lines for the common record of one task name in one worker process, as text: a ``SUCCESS`` with no
    exception, checkpoint, heap trace, child task, run tag or fault, whose GC policy did not collect.

    Why: such records are nearly every record a worker writes, and all but a dozen integers of their line are the
    same for one task name in one process. Formatting those integers into the constant text costs a fraction of
    building a :class:`TaskMemory` and encoding it (:meth:`TaskMemory.to_line`), and the line is the same, byte for
    byte (tests hold the two together)."""

    def __init__(self, task_name: str, pid: int, hostname: str | None, pool: str, peak_source: str, gc: dict):
        self.task_name, self.pid, self.hostname, self.pool = task_name, pid, hostname, pool
        self.peak_source, self.gc = peak_source, gc
        text = _encode_line
        self._after_id = f",{text(task_name)},{text(SUCCESS)},{text(pid)},{text(hostname)},{text(pool)},"
        # attempt, start, finish, peak, delta, peak delta (KiB); started_at (µs), duration (ns), overlapped, limit
        # (KiB), process percent (tenths): the figures of layout 2 (LineLayout.units), then the constant rest.
        self._figures = (
            f"%d,%d,%d,%d,%d,%d,{text(peak_source)},null,[],{text(gc)},%d,%d,%d,%s,%s,null,null,null,null,[],[],"
            f"{RECORD_VERSION}]"
        )

    def line(
        self,
        task_id: str,
        attempt: int,
        start_kib: float,
        finish_kib: float,
        peak_kib: float,
        started_us: int,
        duration_ns: int,
        overlapped: int,
        limit_kib: float | None,
        percent_tenths: int | None,
    ) -> str:
        """The line; the KiB figures may be whole floats (``start_mb * 1024``), written as integers."""
        figures = self._figures % (
            attempt,
            start_kib,
            finish_kib,
            peak_kib,
            finish_kib - start_kib,
            peak_kib - start_kib,
            started_us,
            duration_ns,
            overlapped,
            "null" if limit_kib is None else int(limit_kib),  # whole floats welcome, as for the %d figures
            "null" if percent_tenths is None else int(percent_tenths),
        )
        return f"[{LINE_LAYOUT},{_quote(task_id)}{self._after_id}{figures}"
