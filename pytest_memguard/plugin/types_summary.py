"""Which object types grew (count and size), from pympler, for tests that went over budget.

Why only around a re-run: a type summary needs a "before" picture, and pympler's ``SummaryTracker()`` took 2.7 s at
527 k objects (and ``diff()`` as long again, ``MEASUREMENTS.md``). Taking one at the start of every test would cost
seconds per test on big heaps, so memguard never takes it on a green path: it is taken when a failing test's call
phase is re-run (``--memguard-rerun-traced``), where the cost is paid once per failing test only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.units import format_bytes


@dataclass(frozen=True)
class TypeGrowth:
    type_name: str
    count: int
    size: int

    def render(self) -> str:
        return f"  {format_bytes(self.size):>10} {self.count:>+9,}  {self.type_name}"

    def as_dict(self) -> dict:
        return {"type": self.type_name, "count": self.count, "size": self.size}


class TypeTracker:
    """``start()`` before the work, ``grown()`` after: the types whose total size grew, biggest first."""

    def __init__(self) -> None:
        self._tracker = None
        self.error: str | None = None

    def start(self) -> TypeTracker:
        try:
            from pympler import tracker

            self._tracker = tracker.SummaryTracker()
        except Exception as exc:  # pympler missing or failing must not break the run
            self.error = f"pympler summary unavailable: {type(exc).__name__}: {exc}"
        return self

    def grown(self, limit: int = 10) -> list[TypeGrowth]:
        if self._tracker is None:
            return []
        try:
            rows = self._tracker.diff()
        except Exception as exc:
            self.error = f"pympler diff failed: {type(exc).__name__}: {exc}"
            return []
        growth = [TypeGrowth(str(name), int(count), int(size)) for name, count, size in rows if size > 0]
        growth.sort(key=lambda row: row.size, reverse=True)
        return growth[:limit]


def render_types(rows: list[TypeGrowth]) -> str:
    lines = ["object types that grew (pympler; size, count):"]
    if rows:
        lines.extend(row.render() for row in rows)
    else:
        lines.append("  (no type grew)")
    return "\n".join(lines)
