"""Object types whose count grew in every run, counted with pympler.

Cost, measured on our machines (``shared/MEASUREMENTS.md``): pympler's ``SummaryTracker`` takes 2.7 s per
summary at 527 k objects, because it sizes every object. Here only *counts* are taken (no ``asizeof``), from
``muppy.get_objects()`` — which, unlike ``gc.get_objects()``, also sees untracked objects such as ``bytes`` and
``str`` held by containers, the usual payload of a leak. That still walks every object (≈ a second or more on a
large heap), so :class:`~.hunter.LeakHunter` does it only for a hunt already judged leaking, in a few extra runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TypeGrowth:
    type_name: str
    per_run: float  # objects added per run
    grew_runs: int
    runs: int

    def render(self) -> str:
        return f"{self.type_name} +{self.per_run:.1f}/run (grew in {self.grew_runs}/{self.runs} runs)"

    def as_dict(self) -> dict:
        return {"type": self.type_name, "per_run": round(self.per_run, 2), "grew_runs": self.grew_runs}


def _type_name(tp: type) -> str:
    module = getattr(tp, "__module__", "builtins")
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


def count_types() -> Counter:
    """``Counter`` of live objects by type (gc-tracked objects and what they directly reference)."""
    from pympler import muppy

    objects = muppy.get_objects()
    try:
        return Counter(map(type, objects))
    finally:
        del objects


def type_growth(
    func: Callable[..., Any],
    *args: Any,
    runs: int = 3,
    top: int = 5,
    min_fraction: float = 1.0,
    **kwargs: Any,
) -> list[TypeGrowth]:
    """Run ``func`` ``runs`` times, counting objects by type before and after each; return the types whose count
    grew in at least ``min_fraction`` of the runs, most added first (at most ``top``)."""
    grew: Counter = Counter()
    previous = count_types()
    first = previous
    for _ in range(runs):
        func(*args, **kwargs)
        current = count_types()
        for tp, n in current.items():
            if n > previous.get(tp, 0):
                grew[tp] += 1
        previous = current
    needed = max(1, int(min_fraction * runs + 0.999))
    found = [
        TypeGrowth(_type_name(tp), (previous[tp] - first.get(tp, 0)) / runs, grew[tp], runs)
        for tp in grew
        if grew[tp] >= needed and previous[tp] > first.get(tp, 0)
    ]
    found.sort(key=lambda g: g.per_run, reverse=True)
    return found[:top]
