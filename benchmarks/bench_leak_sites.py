"""Leak-site report cost at 300 k traced blocks: naive ``compare_to`` vs. the hunter's "compare only what grew".

Run: ``python benchmarks/bench_leak_sites.py [--blocks 300000] [--frames 1] [--repeat 3]``

Builds ~300 k live traced blocks (tracemalloc on while they are allocated, as under ``-X tracemalloc`` or a
tracing test session), then finds the sites of a small leak (10 KB/run) two ways:

* naive: ``take_snapshot()`` before and after one run and ``after.compare_to(before, "lineno")``;
* memguard: ``LeakHunter(warmup=1, runs=10).hunt(leak)`` — figures are its ``sites_s`` (all 11 site observations
  plus the report) and ``restart_s`` (dropping the 300 k old traces), i.e. everything the site report adds.

Prints medians over ``--repeat`` rounds; the target is ≤ 0.5 s for the memguard figure. No assertion: the
figures and their ratio are the result.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures.leaks import workloads  # noqa: E402
from pytest_memguard.leaks import LeakHunter  # noqa: E402

TARGET_S = 0.5


def build_heap(blocks: int) -> list:
    """About ``blocks`` traced blocks: each item is a list, a str, a tuple and two ints (6 blocks)."""
    return [[str(i) * 3, (i, i + 1)] for i in range(blocks // 6)]


def naive_once(leak) -> tuple[float, str]:
    before = tracemalloc.take_snapshot()
    leak()
    after = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    stats = after.compare_to(before, "lineno")
    elapsed = time.perf_counter() - t0
    top = next(s for s in stats if s.size_diff > 0)
    return elapsed, f"{top.traceback[0].filename.rsplit('/', 1)[-1]}:{top.traceback[0].lineno}"


def naive_with_snapshots(leak) -> float:
    t0 = time.perf_counter()
    before = tracemalloc.take_snapshot()
    leak()
    after = tracemalloc.take_snapshot()
    after.compare_to(before, "lineno")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=300_000)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    naive_cmp, naive_total, ours_sites, ours_restart, ours_hunt = [], [], [], [], []
    found_naive = found_ours = ""
    for _ in range(args.repeat):
        tracemalloc.start(args.frames)
        heap = build_heap(args.blocks)
        gc.collect()
        traced = len(tracemalloc.take_snapshot().traces)
        elapsed, found_naive = naive_once(workloads.leak_10kb)
        naive_cmp.append(elapsed)
        naive_total.append(naive_with_snapshots(workloads.leak_10kb))
        result = LeakHunter(1, 10, frames=args.frames, types=False, rss=False).hunt(workloads.leak_10kb)
        ours_sites.append(result.timings["sites_s"])
        ours_restart.append(result.timings["restart_s"])
        ours_hunt.append(result.timings["hunt_s"])
        found_ours = result.sites[0].location if result.sites else "(none)"
        assert tracemalloc.is_tracing()  # the hunter resumed tracing
        tracemalloc.stop()
        del heap
        workloads.reset()
        gc.collect()

    med = statistics.median
    ours = med(ours_sites) + med(ours_restart)
    print(f"traced blocks before the hunt: {traced:,} (frames={args.frames}), medians of {args.repeat} rounds")
    print(f"naive compare_to('lineno') alone:          {med(naive_cmp):.3f} s   top site {found_naive}")
    print(f"naive 2 snapshots + compare_to:            {med(naive_total):.3f} s")
    print(f"memguard site report (10 runs, all obs.):  {med(ours_sites):.3f} s + restart {med(ours_restart):.3f} s")
    print(f"memguard whole hunt incl. 22 gc.collect(): {med(ours_hunt):.3f} s   top site {found_ours}")
    print(
        f"ratio naive compare_to / memguard report:  {med(naive_cmp) / ours:.1f}x   (target <= {TARGET_S} s: "
        f"{'met' if ours <= TARGET_S else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
