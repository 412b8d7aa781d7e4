"""Optional Prometheus metrics (``pip install pytest-memguard[prometheus]``), fed from each ``TaskMemory``.

- ``memguard_task_peak_mb`` / ``memguard_task_peak_delta_mb`` / ``memguard_task_delta_mb``: histograms per
  ``task_name``;
- ``memguard_task_threshold_breaches_total{task_name, kind}``: peak over ``warn_peak_mb`` (``kind="peak"``) or over
  ``warn_process_percent`` of the limit (``kind="process_percent"``);
- ``memguard_task_suspected_oom_total{task_name}`` and ``memguard_task_worker_lost_total{task_name}``.

Under prefork the metrics are recorded in the children and in the parent (WORKER_LOST): set
``PROMETHEUS_MULTIPROC_DIR`` before the worker starts, as prometheus-client's multiprocess mode requires, and serve
them with :func:`multiprocess_registry`. prometheus-client is imported only when metrics are enabled.
Only counters and histograms are used, whose multiprocess files are meant to outlive their process (a recycled or
killed child's counts stay in the totals), so no ``mark_process_dead`` is needed on child exit; that call only
prunes live gauges. A prefork worker without the folder warns at start (:func:`multiprocess_problem`).
Proven end to end by ``tests/celery/test_metrics_prefork.py``.
"""

from __future__ import annotations

import os

from .records import WORKER_LOST, TaskMemory

MB_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000, float("inf"))
_metrics: dict | None = None


def _require_client():
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "memguard metrics need prometheus-client: pip install 'pytest-memguard[prometheus]' "
            "(or turn metrics off: memguard_metrics=False)"
        ) from exc
    return prometheus_client


def _create(registry=None) -> dict:
    pc = _require_client()
    kwargs = {"registry": registry} if registry is not None else {}
    return {
        "peak": pc.Histogram(
            "memguard_task_peak_mb", "Peak RSS of a task (MB)", ["task_name"], buckets=MB_BUCKETS, **kwargs
        ),
        "peak_delta": pc.Histogram(
            "memguard_task_peak_delta_mb",
            "Peak RSS above the task's start (MB)",
            ["task_name"],
            buckets=MB_BUCKETS,
            **kwargs,
        ),
        "delta": pc.Histogram(
            "memguard_task_delta_mb",
            "RSS change from start to finish (MB)",
            ["task_name"],
            buckets=MB_BUCKETS,
            **kwargs,
        ),
        "breaches": pc.Counter(
            "memguard_task_threshold_breaches", "Tasks over a memory threshold", ["task_name", "kind"], **kwargs
        ),
        "oom": pc.Counter(
            "memguard_task_suspected_oom", "Tasks whose worker was probably OOM-killed", ["task_name"], **kwargs
        ),
        "lost": pc.Counter("memguard_task_worker_lost", "Tasks whose worker process died", ["task_name"], **kwargs),
    }


class TaskMetrics:
    """Records ``TaskMemory`` figures into process-global Prometheus metrics (created once per process)."""

    def __init__(self, warn_peak_mb: float = 1000.0, warn_process_percent: float = 80.0, registry=None) -> None:
        global _metrics
        if registry is not None:
            self.metrics = _create(registry)
        else:
            if _metrics is None:
                _metrics = _create()
            self.metrics = _metrics
        self.warn_peak_mb = warn_peak_mb
        self.warn_process_percent = warn_process_percent

    def observe(self, record: TaskMemory) -> None:
        m, name = self.metrics, record.task_name
        if record.peak_mb is not None:
            m["peak"].labels(name).observe(record.peak_mb)
            if record.peak_mb > self.warn_peak_mb:
                m["breaches"].labels(name, "peak").inc()
        if record.peak_delta_mb is not None:
            m["peak_delta"].labels(name).observe(max(record.peak_delta_mb, 0.0))
        if record.delta_mb is not None:
            m["delta"].labels(name).observe(record.delta_mb)
        if record.process_percent is not None and record.process_percent > self.warn_process_percent:
            m["breaches"].labels(name, "process_percent").inc()
        if record.state == WORKER_LOST:
            m["lost"].labels(name).inc()
            if record.suspected_oom:
                m["oom"].labels(name).inc()


def multiprocess_problem(pool: str | None, environ=None) -> str | None:
    """Why a worker of this pool would lose its metrics, or ``None``.

    Prefork children are separate processes: without ``PROMETHEUS_MULTIPROC_DIR`` each keeps its figures in its
    own memory, where no scrape of the worker ever reads them. Nothing fails; the metrics just stay empty, so this
    is said once, at worker start.
    """
    env = os.environ if environ is None else environ
    if pool != "prefork":
        return None
    folder = env.get("PROMETHEUS_MULTIPROC_DIR") or env.get("prometheus_multiproc_dir")
    if not folder:
        return (
            "memguard metrics are on in a prefork worker but PROMETHEUS_MULTIPROC_DIR is not set: the children's "
            "metrics cannot be collected (set it to an empty folder before the worker starts)"
        )
    if not os.path.isdir(folder):
        return f"memguard metrics: PROMETHEUS_MULTIPROC_DIR={folder!r} is not a folder (create it before the worker)"
    return None


def multiprocess_registry():
    """A registry that aggregates every process's metrics (for the /metrics endpoint of a prefork worker)."""
    pc = _require_client()
    from prometheus_client import multiprocess

    registry = pc.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
