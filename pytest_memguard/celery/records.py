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
        by the layout number (``[1, "<task_id>", …]``), with the RSS figures and the limit as whole KiB.

        Why: per record, the 28 key strings and the shortest repr of each float were most of the cost. Without
        the keys, with integers for the figures that are exact KiB counts (RSS is counted in pages and KiB, limits
        in pages, so ``start_mb * 1024`` is a whole number; one that is not stays a float) and an encoder built
        once, a line costs about half the instructions of the keyed object (61k vs 115k under callgrind).
        :meth:`from_line` reads it back exactly, and also reads a ``to_json`` object line."""
        values = self.__dict__
        if tuple(values) == _FIELD_NAMES:  # built by __init__ or from_fields: the values are in field order
            line = [LINE_LAYOUT, *values.values()]
        else:
            line = [LINE_LAYOUT, *(getattr(self, name) for name in _FIELD_NAMES)]
        for position in _KIB_POSITIONS:
            mb = line[position]
            if mb.__class__ is float and (kib := mb * 1024.0).is_integer():
                line[position] = int(kib)
        return _encode_line(line)

    @classmethod
    def from_line(cls, text: str | bytes) -> TaskMemory:
        """Read a :meth:`to_line` (or :meth:`to_json`) line; ``ValueError`` for anything else."""
        data = json.loads(text)
        if isinstance(data, dict):
            return cls.from_dict(data)
        if not isinstance(data, list) or not data:
            raise ValueError(f"not a TaskMemory line: {str(text)[:80]!r}")
        layout = _LINE_LAYOUTS.get(data[0])
        if layout is None or len(data) != len(layout.names) + 1:
            raise ValueError(f"not a TaskMemory line of a known layout (layout {data[0]!r}, {len(data)} values)")
        values = dict(zip(layout.names, data[1:], strict=True))
        for name in layout.kib_fields:
            if values[name].__class__ is int:  # whole KiB (a float was written as it was)
                values[name] /= 1024
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
    """How a journal line is laid out: the field names in order, and which of them are written as whole KiB."""

    names: tuple[str, ...]
    kib_fields: tuple[str, ...]


#: Each journal line layout: a line is read by the layout it names, so journals written by an older worker stay
#: readable. Adding, removing or reordering a field (or a KiB figure) means a new layout number here.
_LINE_LAYOUTS: dict[int, LineLayout] = {
    1: LineLayout(
        names=(
            "task_id", "task_name", "state", "pid", "hostname", "pool", "attempt", "start_mb", "finish_mb", "peak_mb",
            "delta_mb", "peak_delta_mb", "peak_source", "heap", "checkpoints", "gc", "started_at", "duration_s",
            "overlapped", "limit_mb", "process_percent", "exception", "signal", "suspected_oom", "run_tag",
            "children", "errors", "version",
        ),
        kib_fields=("start_mb", "finish_mb", "peak_mb", "delta_mb", "peak_delta_mb", "limit_mb"),
    ),
}  # fmt: skip
LINE_LAYOUT = 1
if _LINE_LAYOUTS[LINE_LAYOUT].names != _FIELD_NAMES:  # a field changed without a new line layout: fail at import
    raise RuntimeError(f"TaskMemory fields {_FIELD_NAMES} differ from line layout {LINE_LAYOUT}: add a new layout")
_KIB_POSITIONS = tuple(1 + _FIELD_NAMES.index(name) for name in _LINE_LAYOUTS[LINE_LAYOUT].kib_fields)
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
