"""``MemoryMonitor``: the seed guide's API, with a peak that is true.

The seed sampled RSS at START, checkpoints and FINISH and called the largest reading "peak"; a 300 MB buffer that
lived between two checkpoints was invisible. Here the peak is the kernel's high-water mark, reset when a monitor
starts (see :mod:`.probes`), so any spike between START and FINISH is seen.

The reset is process-wide, so monitors *nest*: before any monitor resets the mark, the mark so far is folded into
every active monitor, and a monitor's peak is the maximum of what was folded into it and the mark at its finish.
A test-level monitor around three task-level monitors therefore still reports its own true peak. tracemalloc's
``reset_peak()`` is handled the same way.

A fault inside monitoring never reaches the monitored work: it is logged once per monitor and the figure becomes
``None`` (unknown).
"""

from __future__ import annotations

import contextvars
import functools
import gc
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .cgroup import current_cgroup_memory
from .config import MonitorSettings, default_settings
from .probes import PEAK_SOURCE_KERNEL, PeakSampler, ProcessProbe, get_probe, sampled_source
from .system import cached_effective_limit_bytes, percent_of, process_percent, recent_system_usage, system_usage
from .units import MB, format_mb

logger = logging.getLogger("pytest_memguard")

F = TypeVar("F", bound=Callable[..., Any])

# -- the nesting registry: the only state shared between monitors ---------------------------------------------------
_registry_lock = threading.Lock()
_active: set[MemoryMonitor] = set()
_samplers: dict[tuple[str, float], PeakSampler] = {}

# The innermost running monitor of the current thread/task, for checkpoint() from deep inside library code.
_current: contextvars.ContextVar[MemoryMonitor | None] = contextvars.ContextVar("memguard_monitor", default=None)

# Last full collection: RSS right after it (the "growth" GC policy measures from here), per process.
_gc_state = {"rss_after_last_full": None}
# This process's pid, kept current across fork: os.getpid() is a system call, and the hot path needs it twice.
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    _gc_state["rss_after_last_full"] = None  # the parent's reference point means nothing here
    _active.clear()  # the parent's running monitors do not run in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_system_text_cache: tuple[dict | None, str] = (None, "?")


def _system_text(usage: dict) -> str:
    """``System=`` as text, formatted once per system reading (:func:`recent_system_usage` keeps one ~1 s)."""
    global _system_text_cache
    cached_usage, text = _system_text_cache
    if cached_usage is not usage:
        percent = usage["used_percent"]
        text = "?" if percent is None else str(percent)
        _system_text_cache = (usage, text)
    return text


def current_monitor() -> MemoryMonitor | None:
    """The innermost monitor running in this context (thread, or task in a threads/gevent pool), if any."""
    return _current.get()


def checkpoint(label: str) -> dict | None:
    """Mark a phase on the running monitor, wherever the caller is; a no-op (``None``) when nothing is monitored.

    Library code can call this without knowing whether it runs inside a monitored Celery task or a test.
    """
    monitor = _current.get()
    if monitor is None:
        return None
    return monitor.checkpoint(label)


def _mb(n_bytes: int | None, digits: int = 3) -> float | None:
    return None if n_bytes is None else round(n_bytes / MB, digits)


@dataclass
class Measurement:
    """What one monitored piece of work used. ``*_mb`` figures are MB (2**20 bytes); ``None`` means unknown."""

    task_name: str
    pid: int
    start_mb: float | None
    finish_mb: float | None
    peak_mb: float | None
    delta_mb: float | None
    peak_delta_mb: float | None
    peak_source: str
    started_at: float
    duration_s: float
    checkpoints: list[dict] = field(default_factory=list)
    gc: dict = field(default_factory=dict)
    heap: dict | None = None
    children: dict | None = None
    overlapped: int = 0
    limit_mb: float | None = None
    process_percent: float | None = None
    task_id: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        # Not dataclasses.asdict: its recursive deep copy cost ~200 us per task, 20x the whole monitor's budget.
        d = dict(self.__dict__)
        d["checkpoints"] = [dict(c) for c in self.checkpoints]
        d["gc"] = dict(self.gc)
        d["errors"] = list(self.errors)
        for key in ("heap", "children"):
            if d[key] is not None:
                d[key] = dict(d[key])
        return d


class MemoryMonitor:
    """Measure the memory of one piece of work: ``start_monitoring()`` … ``finish_monitoring()``.

    Also a context manager (``with MemoryMonitor("job") as m:``) and a decorator (``@MemoryMonitor("job")``, a
    fresh monitor per call). Settings not given here come from ``MEMGUARD_*`` environment variables
    (:mod:`.config`). ``enable_gc=False`` turns the after-work GC policy off, as in the seed.
    """

    def __init__(
        self,
        task_name: str = "unknown",
        enable_gc: bool = True,
        *,
        task_id: str | None = None,
        settings: MonitorSettings | None = None,
        log: logging.Logger | None = None,
        log_level: int = logging.INFO,
        on_event: Callable[[str, dict], None] | None = None,
        **overrides: Any,
    ) -> None:
        self.task_name = task_name
        self.task_id = task_id
        self.enable_gc = enable_gc
        settings = settings or default_settings()
        self.settings = settings.with_overrides(**overrides) if overrides else settings
        self.log = log or logger
        self.log_level = log_level
        self.on_event = on_event
        self._checkpoints: list[dict] = []
        self._errors: list[str] = []

    # The state of one run. Immutable defaults live on the class, so a new monitor (one per task) sets only what
    # it changes; _reset_state() drops what a previous run of a reused monitor set.
    _running = False
    _start_rss: int | None = None
    _peak = 0
    _peak_source = PEAK_SOURCE_KERNEL
    _heap_peak = 0
    _heap_start: int | None = None
    _started_tracemalloc = False
    _children_peak = 0
    _children_rusage_start: int | None = None
    # Monitors that were active at some moment alongside this one; a count, not a set of ids, so a long-lived outer
    # monitor around millions of tasks stays O(1) in memory.
    _overlapped = 0
    _sampler_keys: tuple | list[tuple[PeakSampler, int]] = ()
    _token: contextvars.Token | None = None
    _t0 = 0  # perf_counter_ns() at the start
    _started_at = 0.0
    _fault_logged = False
    _result: dict | None = None
    _measurement: Measurement | None = None
    _STATE = (
        "_running", "_start_rss", "_peak", "_peak_source", "_heap_peak", "_heap_start", "_started_tracemalloc",
        "_children_peak", "_children_rusage_start", "_overlapped", "_sampler_keys", "_token", "_t0", "_started_at",
        "_fault_logged", "_result", "_measurement",
    )  # fmt: skip

    def _reset_state(self) -> None:
        state = self.__dict__
        for name in self._STATE:
            state.pop(name, None)
        self._checkpoints = []
        self._errors = []

    # -- helpers ----------------------------------------------------------------------------------------------
    def _fault(self, where: str, exc: BaseException) -> None:
        self._errors.append(f"{where}: {type(exc).__name__}: {exc}")
        if not self._fault_logged:
            self._fault_logged = True
            self.log.warning(
                "Memory [%s] monitoring fault in %s (figures marked unknown, the work is unaffected): %r",
                self.task_name,
                where,
                exc,
                exc_info=True,
            )

    def _fold(self, value: int) -> None:
        """Raise this monitor's peak to ``value`` bytes (called by the registry and samplers)."""
        if value > self._peak:
            self._peak = value

    def _fold_heap(self, value: int) -> None:
        if value > self._heap_peak:
            self._heap_peak = value

    def _fold_children(self, value: int) -> None:
        if value > self._children_peak:
            self._children_peak = value

    @property
    def _uses_kernel_mark(self) -> bool:
        return self._peak_source == PEAK_SOURCE_KERNEL

    def _sampler(self, kind: str, read: Callable[[], int | None]) -> PeakSampler:
        interval = self.settings.sample_interval_ms / 1000.0
        key = (kind, interval)
        sampler = _samplers.get(key)
        if sampler is None:
            sampler = _samplers.setdefault(key, PeakSampler(read, interval))
        return sampler

    def _emit(self, event: str, payload: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, payload)
            except Exception as exc:  # a listener's bug must not break the work either
                self._fault(f"on_event({event})", exc)

    # -- the seed's API ---------------------------------------------------------------------------------------
    def start_monitoring(self) -> MemoryMonitor:
        """Begin measuring: record the start RSS and reset the peak (folding the old peak into outer monitors)."""
        if self._running:
            return self
        if self._result is not None or self._checkpoints:  # reused: forget the previous run
            self._reset_state()
        self._running = True
        # Whole microseconds and nanoseconds: figures that a journal line carries as exact integers (a float's
        # shortest repr is ~8,700 instructions each; see TaskMemory.to_line), at a resolution nobody reads past.
        self._started_at = time.time_ns() // 1000 / 1e6
        self._t0 = time.perf_counter_ns()
        probe = get_probe()
        settings = self.settings
        try:
            use_kernel = probe.hwm_usable and settings.peak_mode != "sample"
            if not use_kernel:
                if settings.peak_mode == "kernel":
                    self._errors.append(f"peak_mode=kernel unavailable: {probe.hwm_refusal}; sampling instead")
                self._peak_source = sampled_source(settings.sample_interval_ms / 1000.0)
            trace = settings.trace_heap
            if trace and not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracemalloc = True
            with _registry_lock:
                if _active:
                    self._join_running_monitors(probe, use_kernel, trace)
                if use_kernel:
                    probe.reset_hwm()
                if trace:
                    heap_now = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
                    self._heap_start = self._heap_peak = heap_now
                _active.add(self)
            # Right after the reset the kernel's mark *is* the current RSS: one cheap getrusage instead of statm.
            self._start_rss = probe.rss_after_reset() if use_kernel else probe.rss_bytes()
            self._peak = self._start_rss or 0
            if not use_kernel:
                sampler = self._sampler("rss", probe.rss_bytes)
                self._sampler_keys = [*self._sampler_keys, (sampler, sampler.add(self._fold))]
            if settings.include_children:
                self._start_children()
        except Exception as exc:
            self._fault("start_monitoring", exc)
        self._token = _current.set(self)
        if self.log.isEnabledFor(self.log_level):
            self._log_line("START", self._start_rss, event="start")
        if self.on_event is not None:
            self._emit("start", {"rss_mb": _mb(self._start_rss), "started_at": self._started_at})
        return self

    def _join_running_monitors(self, probe: ProcessProbe, use_kernel: bool, trace: bool) -> None:
        """Count the overlap both ways and hand the running monitors the peaks that the coming resets would erase.

        Called with the registry lock held, only when other monitors run (the nested/concurrent case)."""
        for other in _active:
            other._overlapped += 1
        self._overlapped = len(_active)
        if use_kernel:
            mark = probe.hwm_bytes()
            if mark is not None:
                for other in _active:
                    other._fold(mark)
        if trace:
            heap_peak = tracemalloc.get_traced_memory()[1]
            for other in _active:
                if other.settings.trace_heap:
                    other._fold_heap(heap_peak)

    def _start_children(self) -> None:
        from .children import children_private_bytes, reaped_children_maxrss_bytes

        self._children_rusage_start = reaped_children_maxrss_bytes()
        sampler = self._sampler("children", children_private_bytes)
        self._sampler_keys = [*self._sampler_keys, (sampler, sampler.add(self._fold_children))]
        sampler.sample_now()

    def _peak_so_far(self) -> int | None:
        peak = self._peak
        if self._uses_kernel_mark:
            mark = get_probe().hwm_bytes()
            if mark is not None and mark > peak:
                peak = mark
        return peak or None

    def checkpoint(self, label: str) -> dict:
        """Record RSS and the peak so far at a named phase, logged as ``checkpoint:<label>``."""
        try:
            rss = get_probe().rss_bytes()
            peak = self._peak_so_far()
            if rss is not None and (peak is None or rss > peak):
                peak = rss  # statm and the mark are read a moment apart: the peak is never below the RSS
        except Exception as exc:
            self._fault("checkpoint", exc)
            rss = peak = None
        entry = {
            "label": str(label),
            "time_s": round((time.perf_counter_ns() - self._t0) / 1e9, 6) if self._running else None,
            "rss_mb": _mb(rss),
            "peak_mb": _mb(peak),
        }
        self._checkpoints.append(entry)
        if self.log.isEnabledFor(self.log_level):
            self._log_line(f"checkpoint:{label}", rss, peak=peak, event="checkpoint")
        self._emit("checkpoint", entry)
        return entry

    def finish_monitoring(self, outcome: str = "FINISH") -> dict:
        """Stop measuring and return the seed's summary dict (``task_name, start_mb, finish_mb, peak_mb,
        delta_mb``) plus ``peak_delta_mb``, ``peak_source``, checkpoints, GC, heap, children and limit figures.

        ``outcome`` labels the final log line (``FINISH``; the Celery layer passes ``FAILURE``/``RETRY`` so the
        seed's failure lines carry the same figures)."""
        if not self._running:
            if self._result is not None:
                return self._result
            self.start_monitoring()
        probe = get_probe()
        finish_rss = peak = None
        heap = children = None
        try:
            peak = self._stop_peak_tracking(probe)
            gc_figures, finish_rss = self._run_gc_policy(probe)
            if self._heap_start is not None:
                heap = self._heap_figures()
            if self.settings.include_children:
                children = self._children_figures()
        except Exception as exc:
            self._fault("finish_monitoring", exc)
            gc_figures = {"policy": self._gc_policy(), "collected": False}
            self._leave_registry()
        finally:
            self._running = False
            if self._token is not None:
                try:
                    _current.reset(self._token)
                except ValueError:  # finished from another context than started: just clear ours
                    _current.set(None)
                self._token = None
        start = self._start_rss
        if peak is not None and finish_rss is not None and finish_rss > peak:
            peak = finish_rss
        limit = cached_effective_limit_bytes()
        known = start is not None
        # One dict literal, not a dataclass and a copy of it: this is the per-task hot path (benchmarks/). MB
        # figures are not rounded: bytes are multiples of 1 KiB, so bytes / 2**20 is an exact binary fraction
        # already, and round(x, 3) (a decimal conversion, ~2,600 instructions each) was a third of the finish cost.
        result = {
            "task_name": self.task_name,
            "start_mb": start / MB if known else None,
            "finish_mb": finish_rss / MB if finish_rss is not None else None,
            "peak_mb": peak / MB if peak is not None else None,
            "delta_mb": (finish_rss - start) / MB if known and finish_rss is not None else None,
            "peak_delta_mb": (peak - start) / MB if known and peak is not None else None,
            "peak_source": self._peak_source,
            "pid": _pid,
            "started_at": self._started_at,
            "duration_s": (time.perf_counter_ns() - self._t0) / 1e9,
            "checkpoints": self._checkpoints,
            "gc": gc_figures,
            "heap": heap,
            "children": children,
            "overlapped": self._overlapped,
            "limit_mb": limit / MB if limit else None,
            "process_percent": percent_of(peak, limit),
            "task_id": self.task_id,
            "errors": self._errors,
        }
        self._result = result
        self._measurement = None
        if self.log.isEnabledFor(self.log_level):
            peak_text = format_mb(result["peak_mb"])
            label = f"{outcome} (delta={format_mb(result['delta_mb'], signed=True)}, peak={peak_text})"
            self._log_line(label, finish_rss, peak=peak, result=result, event=outcome.lower(), peak_text=peak_text)
        settings = self.settings
        if (peak is not None and peak > settings.warn_peak_bytes) or (
            result["process_percent"] is not None and result["process_percent"] > settings.warn_process_percent
        ):
            self._warn_thresholds(result)
        if self.on_event is not None:
            self._emit("finish", dict(result))
        # The caller's dict is the record itself, not a copy (the copy was ~1,000 instructions per task): the
        # typed ``measurement`` and a repeated finish_monitoring() read this same dict.
        return result

    @property
    def measurement(self) -> Measurement | None:
        """The typed record of the last finished run (``None`` before a finish)."""
        if self._measurement is None and self._result is not None:
            self._measurement = Measurement(**self._result)
        return self._measurement

    def _stop_peak_tracking(self, probe) -> int | None:
        if self._sampler_keys:
            for sampler, key in self._sampler_keys:
                sampler.sample_now()
                sampler.remove(key)
            self._sampler_keys = ()
        with _registry_lock:
            if self._uses_kernel_mark:
                mark = probe.hwm_bytes()
                if mark is not None:
                    for monitor in _active:
                        if mark > monitor._peak:
                            monitor._peak = mark
            if self._heap_start is not None and tracemalloc.is_tracing():
                heap_peak = tracemalloc.get_traced_memory()[1]
                for monitor in _active:
                    if monitor.settings.trace_heap:
                        monitor._fold_heap(heap_peak)
            _active.discard(self)
        return self._peak or None

    def _leave_registry(self) -> None:
        with _registry_lock:
            _active.discard(self)
        for sampler, key in self._sampler_keys:
            sampler.remove(key)
        self._sampler_keys = ()

    def _heap_figures(self) -> dict:
        current = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        figures = {
            "start_mb": _mb(self._heap_start),
            "current_mb": _mb(current),
            "peak_mb": _mb(self._heap_peak),
            "delta_mb": _mb(current - self._heap_start) if current is not None else None,
            "peak_delta_mb": _mb(self._heap_peak - self._heap_start),
        }
        if self._started_tracemalloc:
            with _registry_lock:
                still_needed = any(m.settings.trace_heap for m in _active)
            if not still_needed:
                tracemalloc.stop()
        return figures

    def _children_figures(self) -> dict:
        from .children import reaped_children_maxrss_bytes

        reaped_now = reaped_children_maxrss_bytes()
        reaped_peak = None
        # RUSAGE_CHILDREN's maxrss is the largest waited-for child ever; if it rose, a child reaped during this
        # monitor reached that RSS (exact, even for a spike the sampler missed). A forked child's RSS includes the
        # pages it shares with this process, so at most our RSS at the start is subtracted: a lower bound of its
        # private peak, never the double count that summing RSS would give.
        start = self._children_rusage_start
        if reaped_now is not None and start is not None and reaped_now > start:
            reaped_peak = max(reaped_now - (self._start_rss or 0), 0)
        peak = max(self._children_peak, reaped_peak or 0)
        return {
            "peak_mb": _mb(peak),
            "sampled_peak_mb": _mb(self._children_peak),
            "reaped_peak_mb": _mb(reaped_peak),
            "total_peak_mb": _mb((self._peak or 0) + peak),
            "measure": "private (USS)",
            "source": f"{sampled_source(self.settings.sample_interval_ms / 1000.0)}+rusage",
        }

    # -- garbage collection ----------------------------------------------------------------------------------
    def _gc_policy(self) -> str:
        return self.settings.gc_policy if self.enable_gc else "never"

    def _run_gc_policy(self, probe) -> tuple[dict, int | None]:
        """Apply the GC policy; return its figures and the RSS after it (read once, reused as the finish RSS)."""
        policy = self._gc_policy()
        rss = probe.rss_bytes()
        if policy == "growth":
            reference = _gc_state["rss_after_last_full"]
            if reference is None:
                # First work in this process: the reference is the start of this work, not zero.
                reference = _gc_state["rss_after_last_full"] = self._start_rss
            if rss is None or reference is None or rss - reference < self.settings.gc_growth_bytes:
                return {"policy": policy, "collected": False}, rss
        elif policy == "never":
            return {"policy": policy, "collected": False}, rss
        stats = self.force_garbage_collection(log_result=False)
        return {"policy": policy, "collected": True, **stats}, probe.rss_bytes()

    def force_garbage_collection(self, log_result: bool = True) -> dict:
        """Collect all three generations and report what it freed: ``before_mb, after_mb, freed_mb,
        objects_collected, collections_by_generation``.

        ``freed_mb`` is the drop in RSS, which is often ~0 even when many objects were freed: the allocator keeps
        freed memory for reuse. ``objects_collected`` is the honest measure of garbage.
        """
        probe = get_probe()
        before = probe.rss_bytes()
        t0 = time.perf_counter()
        by_generation = {}
        for generation in (0, 1, 2):
            by_generation[f"gen{generation}"] = gc.collect(generation)
        duration = time.perf_counter() - t0
        after = probe.rss_bytes()
        _gc_state["rss_after_last_full"] = after
        freed = (before - after) if before is not None and after is not None else None
        stats = {
            "before_mb": _mb(before, 1),
            "after_mb": _mb(after, 1),
            "freed_mb": _mb(freed, 1),
            "objects_collected": sum(by_generation.values()),
            "collections_by_generation": by_generation,
            "duration_ms": round(duration * 1000, 3),
        }
        if log_result and self.log.isEnabledFor(self.log_level):
            self.log.log(
                self.log_level,
                "Memory [%s] GC: collected %d objects in %.1fms, RSS %s -> %s (freed %s)",
                self.task_name,
                stats["objects_collected"],
                stats["duration_ms"],
                format_mb(stats["before_mb"]),
                format_mb(stats["after_mb"]),
                format_mb(stats["freed_mb"]),
                extra={"memguard": {"event": "gc", "task_name": self.task_name, **stats}},
            )
        return stats

    # -- info and logging -------------------------------------------------------------------------------------
    def get_memory_info(self) -> dict:
        """A snapshot in the seed's shape: ``timestamp, task_name, process{pid, rss_mb, vms_mb, percent, peak_mb},
        system{total_mb, available_mb, used_percent}, gc{collections, objects}`` plus ``system.source`` and
        ``cgroup`` (limit, usage, peak and OOM kills of the container, or ``None`` outside one).

        This is an explicit call, so it counts GC objects (``len(gc.get_objects())``) even though log lines do
        not by default.
        """
        probe = get_probe()
        rss, vms = probe.rss_vms_bytes()
        peak = self._peak_so_far() if self._running else (self._peak or probe.hwm_bytes())
        try:
            cgroup = current_cgroup_memory()
        except Exception as exc:
            self._fault("get_memory_info", exc)
            cgroup = None
        return {
            "timestamp": time.time(),
            "task_name": self.task_name,
            "process": {
                "pid": os.getpid(),
                "rss_mb": _mb(rss, 1),
                "vms_mb": _mb(vms, 1),
                "percent": process_percent(rss),
                "peak_mb": _mb(peak, 1),
            },
            "system": system_usage(),
            "gc": {"collections": list(gc.get_count()), "objects": len(gc.get_objects())},
            "cgroup": cgroup.as_dict() if cgroup is not None else None,
        }

    def _log_line(
        self,
        label: str,
        rss: int | None,
        *,
        peak: int | None = None,
        result: dict | None = None,
        event: str | None = None,
        peak_text: str | None = None,
    ) -> None:
        """``Memory [name] LABEL: RSS=…MB (peak=…MB), Process%=…%, System=…%[, GC objects=N]`` — the seed's
        format, so existing greps keep working; the numbers also travel as ``extra={"memguard": {...}}``.

        Two of these per Celery task at INFO, so each figure is formatted once (a float's text is most of a line's
        own cost): the peak's text is reused from the FINISH label or from the RSS when they are equal (always at
        START), and ``System=`` from the last line while the cached system reading is the same."""
        try:
            if peak is None:
                peak = rss
            usage = recent_system_usage()
            system_percent = usage["used_percent"]
            system_text = _system_text(usage)
            pct = process_percent(rss)
            rss_text = "?MB" if rss is None else f"{rss / MB:.1f}MB"
            if peak_text is None:
                peak_text = rss_text if peak == rss else ("?MB" if peak is None else f"{peak / MB:.1f}MB")
            text = (
                f"Memory [{self.task_name}] {label}: RSS={rss_text} (peak={peak_text}), "
                f"Process%={'?' if pct is None else pct}%, System={system_text}%"
            )
            fields = {
                "event": event or label.split(" ", 1)[0].split(":", 1)[0].lower(),
                "label": label,
                "task_name": self.task_name,
                "task_id": self.task_id,
                "rss_mb": None if rss is None else rss / MB,
                "peak_mb": None if peak is None else peak / MB,
                "process_percent": pct,
                "system_percent": system_percent,
            }
            if result is not None:
                fields.update(result)
            if self.settings.count_gc_objects:
                count = len(gc.get_objects())
                fields["gc_objects"] = count
                text += f", GC objects={count:,}"
            if self.task_id:
                text += f" [task_id={self.task_id}]"
            self.log.log(self.log_level, text, extra={"memguard": fields})
        except Exception as exc:
            self._fault("logging", exc)

    def _warn_thresholds(self, result: dict) -> None:
        s = self.settings
        peak_mb, percent = result["peak_mb"], result["process_percent"]
        if peak_mb is not None and peak_mb > s.warn_peak_mb:
            self.log.warning(
                "Memory [%s] high peak: peak=%.1fMB > %.1fMB threshold",
                self.task_name,
                peak_mb,
                s.warn_peak_mb,
                extra={
                    "memguard": {
                        "event": "warn_peak",
                        "task_name": self.task_name,
                        "task_id": self.task_id,
                        "peak_mb": peak_mb,
                        "threshold_mb": s.warn_peak_mb,
                    }
                },
            )
        if percent is not None and percent > s.warn_process_percent:
            self.log.warning(
                "Memory [%s] high process usage: Process%%=%.1f%% of %.0fMB limit > %.0f%% threshold",
                self.task_name,
                percent,
                result["limit_mb"] or 0,
                s.warn_process_percent,
                extra={
                    "memguard": {
                        "event": "warn_percent",
                        "task_name": self.task_name,
                        "task_id": self.task_id,
                        "process_percent": percent,
                        "threshold_percent": s.warn_process_percent,
                    }
                },
            )

    def log_memory(self, context: str) -> None:
        """Log one seed-format line now, labelled ``context`` (no checkpoint is recorded)."""
        probe = get_probe()
        self._log_line(context, probe.rss_bytes(), peak=self._peak_so_far() if self._running else None)

    # -- context manager and decorator ------------------------------------------------------------------------
    def __enter__(self) -> MemoryMonitor:
        return self.start_monitoring()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish_monitoring()

    def _clone(self) -> MemoryMonitor:
        return MemoryMonitor(
            self.task_name,
            self.enable_gc,
            task_id=self.task_id,
            settings=self.settings,
            log=self.log,
            log_level=self.log_level,
            on_event=self.on_event,
        )

    def __call__(self, func: F) -> F:
        """Use as a decorator: each call runs under a fresh monitor with these settings; the last measurement is
        kept on ``wrapper.memory``."""

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            monitor = self._clone()
            if monitor.task_name == "unknown":
                monitor.task_name = f"{func.__module__}.{func.__qualname__}"
            try:
                with monitor:
                    return func(*args, **kwargs)
            finally:
                wrapper.memory = monitor.measurement  # type: ignore[attr-defined]

        wrapper.memory = None  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<MemoryMonitor {self.task_name!r} {state} peak_source={self._peak_source}>"
