"""``instrument(app)``: every task of a Celery app measured, logged and delivered back as a ``TaskMemory``.

Signal plan (order from ``celery/app/trace.py``): ``task_prerun`` → task body → result stored → ``task_success`` /
``task_failure`` / ``task_retry`` → ``task_postrun``. The monitor starts in ``task_prerun`` and finishes in
``task_postrun``; both run in the thread (and context) that runs the task body, so
:func:`pytest_memguard.checkpoint` inside the task finds the task's monitor through its contextvar, in the prefork,
solo, threads and gevent/eventlet pools alike. ``task_failure``/``task_retry`` only note the exception.

Per-task state lives in a dict keyed by ``(task id, attempt)`` under a lock, never on the task object (one task
object serves every concurrent execution in a threads pool). A ``task_failure`` carrying ``WorkerLostError`` in a
process that is not running the task is the prefork parent hearing of a dead child: it turns the child's persisted
state into a ``WORKER_LOST`` record (:mod:`.inflight`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from ..runtime.monitor import MemoryMonitor
from ..runtime.system import cached_effective_limit_bytes, percent_of
from ..runtime.units import MB
from .collect import RUN_TAG_HEADER, active_run_tag
from .delivery import BatchedWriter, flush_all
from .inflight import InflightFile, close_slots, kib, oom_kill_count, read_inflight, worker_lost_record
from .options import resolve_options
from .records import FAILURE, RECORD_VERSION, RETRY, SUCCESS, SuccessLines, TaskMemory
from .store import local_records, store_for

logger = logging.getLogger("pytest_memguard.celery")

_STATE_BY_CELERY = {"SUCCESS": SUCCESS, "FAILURE": FAILURE, "RETRY": RETRY}
#: A message header asking for a full collection after this execution, whatever the GC policy: the leak hunter sends
#: it so each record's ``finish_mb`` is the memory the process *retains*, not garbage awaiting a collection.
FULL_GC_HEADER = "memguard_full_gc"


@dataclass(slots=True)
class TaskRun:
    """The state of one running execution; found through :data:`current_run` or by ``(task_id, attempt)``."""

    instrumentation: Instrumentation
    task_id: str
    task_name: str
    attempt: int
    hostname: str | None
    pool: str
    run_tag: str | None
    monitor: MemoryMonitor
    full_gc: bool = False
    inflight: InflightFile | None = None
    exception: str | None = None
    children: list[str] = field(default_factory=list)
    token: contextvars.Token | None = None


current_run: contextvars.ContextVar[TaskRun | None] = contextvars.ContextVar("memguard_task_run", default=None)

_lock = threading.Lock()  # guards _by_app and the signal connections; _running needs none (single dict ops)
_running: dict[tuple[str, int], TaskRun] = {}
_by_app: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_worker = {"pool": None, "oom_kills": None}


def _pool_name(pool_cls: Any) -> str | None:
    """``prefork``/``solo``/``threads``/``gevent``/``eventlet`` from Celery's pool class or alias."""
    if pool_cls is None:
        return None
    try:
        from celery import concurrency

        pool_cls = concurrency.get_implementation(pool_cls)
    except Exception:
        return str(pool_cls)
    module = getattr(pool_cls, "__module__", "") or ""
    name = module.rsplit(".", 1)[-1]
    return {"thread": "threads", "asynpool": "prefork"}.get(name, name) or None


def _guess_pool() -> str:
    """The pool when ``worker_init`` has not said (a worker started without it reaching us): prefork children are
    named ``PoolWorker-N`` by billiard."""
    import multiprocessing

    return "prefork" if "PoolWorker" in multiprocessing.current_process().name else "unknown"


_NO_FIELDS: dict = {}


class Instrumentation:
    """What :func:`instrument` connected for one app: its resolved options, settings and record store."""

    def __init__(self, app, overrides: dict[str, Any]) -> None:
        self.app = app
        self.active = True  # False once uninstrument()/suspended()/a new instrument() replaced it
        self.overrides = dict(overrides)
        self.options, self.settings = resolve_options(app, self.overrides)
        self.log = logging.getLogger("pytest_memguard")
        # Resolved once here, not per task: the per-task path reads plain attributes (see bench_celery_tracer.py).
        self._configured_limit_mb = self.options.memory_limit / MB if self.options.memory_limit else None
        self._log_level = self.options.log_level
        self._persist_always = self.options.persist_running == "always"
        self._persist_prefork = self.options.persist_running == "auto"
        self._deliver_to_store = self.options.records
        self._batched = self.options.records_flush_ms > 0
        self._store = None
        self._writer: BatchedWriter | None = None
        self._write = None  # this process's way to hand a record to the store (see _record_sink)
        self._write_line = None  # ... and a journal line, where the store appends lines inline
        self._success_lines: dict[str, SuccessLines] = {}  # by task name, for this process (see _success_line)
        self._delivery_warned = False
        self._metrics = None
        if self.options.metrics:
            from .metrics import TaskMetrics

            self._metrics = TaskMetrics(self.settings.warn_peak_mb, self.settings.warn_process_percent)

    # -- records ---------------------------------------------------------------------------------------------
    def store(self, backend=None):
        """The record store of this process (backends are per process: :func:`_forget_stores` drops it in a forked
        child, so no pid check is needed per task)."""
        if self._store is None:
            self._store = store_for(backend if backend is not None else self.app.backend, self.options.records_dir)
        return self._store

    def _record_sink(self, backend=None):
        """How this process hands a record to its store, chosen on the first record (and again after a fork).

        A store whose write is a round trip (Redis and the other network key-value backends) gets a
        :class:`BatchedWriter`: the task only appends its record and a thread writes each burst in one pipeline.
        A store whose write is a cheap local append (the journals of ``file://`` and ``records_dir``, ~3 µs) is
        written inline: handing the record to a thread was measured to cost more than the append (the thread's
        GIL hand-offs land on the task's own system calls), so those journals are written in ``task_postrun``."""
        if self._write is None:
            store = self.store(backend)
            if self._batched and store.round_trip_per_write:
                self._writer = BatchedWriter(store.write_many, self.options.records_flush_ms / 1000.0)
                _flush_records_at_shutdown()
                self._write = self._writer.submit
            else:
                self._write = store.write
                if self._metrics is None:
                    self._write_line = getattr(store, "write_line", None)
        return self._write

    def deliver(self, record: TaskMemory, backend=None) -> None:
        """Hand the record to this process's registry and metrics, and to the store (:meth:`_record_sink`)."""
        if self._metrics is not None:
            self._metrics.observe(record)
        eager = record.pool == "eager"
        # The in-process registry serves eager runs and collectors listening in this process. A worker process
        # keeps none, whether its records go to the backend or are off: ten thousand retained records were ~11 MB
        # of memguard's own in every worker child, growing as tasks run (and a leak hunt would see that growth
        # as the task's).
        kept = eager or local_records.has_listeners()
        if kept:
            local_records.add(record)
        if eager or not self._deliver_to_store:
            return
        try:
            (self._write or self._record_sink(backend))(record)
        except Exception as exc:  # delivery must never fail the task
            if not kept:  # at least readable in this process (listeners have it already: not twice)
                local_records.add(record)
            if not self._delivery_warned:
                self._delivery_warned = True
                logger.warning("memguard: cannot deliver memory records (%s); tasks are unaffected", exc)

    # -- the task lifecycle ----------------------------------------------------------------------------------
    def persist_running(self, pool: str) -> bool:
        return self._persist_always or (self._persist_prefork and pool == "prefork")

    def start(self, task, task_id: str) -> None:
        # The per-task path (see benchmarks/bench_celery_tracer.py): one read of task.request (a thread-local
        # stack), its fields straight from the Context's instance dict, no lock (one dict store is atomic).
        request = task.request
        fields = getattr(request, "__dict__", _NO_FIELDS)
        attempt = _attempt(request)  # the same key the by-key lookups build
        eager = fields.get("is_eager", False)
        pool = "eager" if eager else (_worker["pool"] or _guess_pool())
        run_tag, full_gc = _memguard_headers(fields)
        if run_tag is None and eager:
            run_tag = active_run_tag()
        name = task.name
        monitor = MemoryMonitor(name, task_id=task_id, settings=self.settings, log=self.log, log_level=self._log_level)
        run = TaskRun(self, task_id, name, attempt, fields.get("hostname"), pool, run_tag, monitor, bool(full_gc))
        _running[(task_id, attempt)] = run
        monitor.start_monitoring()
        if self.persist_running(pool):
            run.inflight = self._open_inflight(run)
            monitor.on_event = _checkpoint_persister(run.inflight)
        run.token = current_run.set(run)

    def _open_inflight(self, run: TaskRun) -> InflightFile | None:
        start = run.monitor._start_rss
        start_kib = None if start is None else start // 1024  # RSS is counted in KiB and pages: exact
        state = {  # figures as whole counts, the pid from the slot: see InflightFile
            "task_id": run.task_id,
            "task_name": run.task_name,
            "attempt": run.attempt,
            "hostname": run.hostname,
            "pool": run.pool,
            "run_tag": run.run_tag,
            "started_us": round(run.monitor._started_at * 1e6),  # whole µs already: exact
            "start_kib": start_kib,
            "peak_kib": start_kib,
            "last_rss_kib": start_kib,
            "peak_source": run.monitor._peak_source,
            "limit_kib": kib(self.limit_mb()),
            "checkpoints": [],
        }
        try:
            return InflightFile(self.options.inflight_dir, state)
        except OSError as exc:
            logger.warning("memguard: cannot persist running task state in %s: %s", self.options.inflight_dir, exc)
            return None

    def limit_mb(self, found_mb: float | None = None) -> float | None:
        """The effective limit: the tighter of the limit found (cgroup/host) and the ``memory_limit`` option."""
        configured = self._configured_limit_mb
        if found_mb is None:
            found = cached_effective_limit_bytes()
            found_mb = found / MB if found else None
        if found_mb and configured:
            return min(found_mb, configured)
        return found_mb or configured or None

    def finish(self, run: TaskRun, task, celery_state: str | None) -> None:
        state = _STATE_BY_CELERY.get(celery_state or "", celery_state or "UNKNOWN")
        monitor = run.monitor
        if (run.full_gc or (state in (FAILURE, RETRY) and self.options.gc_after_failure)) and monitor.enable_gc:
            monitor.settings = monitor.settings.with_overrides(gc_policy="always")
        summary = monitor.finish_monitoring(outcome=state if state in (FAILURE, RETRY) else "FINISH")
        if run.token is not None:
            try:
                current_run.reset(run.token)
            except ValueError:
                current_run.set(None)
        if (
            self._write_line is not None
            and state == SUCCESS
            and run.pool != "eager"  # (an apply() inside a worker's task: its record stays in this process)
            and not local_records.has_listeners()
        ):
            try:
                line = self._success_line(run, summary)
                if line is not None:
                    self._write_line(line)
                    return
            except Exception:  # delivered below, as a whole record, with the fault handling that has
                pass
        if (
            not self._deliver_to_store
            and self._metrics is None
            and run.pool != "eager"
            and not local_records.has_listeners()
        ):
            return  # records off in a worker, no one here listening: deliver() would only drop the record
        # The backend is only needed to choose this process's store, on its first record (task.backend is a
        # property over a thread-local, not free per task).
        self.deliver(self._record(run, state, summary), backend=None if self._write is not None else task.backend)

    def _success_line(self, run: TaskRun, m: dict) -> str | None:
        """The journal line of a plain successful execution, formatted straight from the monitor's figures
        (:class:`SuccessLines`), or ``None`` when the record has anything else to say (then it is built whole).

        The monitor's MB figures are whole KiB (RSS is counted in KiB and pages), its start stamp whole µs and its
        duration whole ns: each scaled back here is exactly the count :meth:`TaskMemory.to_line` would write."""
        if run.exception is not None or run.run_tag is not None or run.children or m["checkpoints"] or m["errors"]:
            return None
        gc = m["gc"]
        if gc["collected"] or m["heap"] is not None or None in (m["start_mb"], m["finish_mb"], m["peak_mb"]):
            return None
        start, finish, peak = m["start_mb"] * 1024, m["finish_mb"] * 1024, m["peak_mb"] * 1024
        limit, percent = self._limit_and_percent(m)
        limit_kib = None if limit is None else limit * 1024
        if not (start.is_integer() and finish.is_integer() and peak.is_integer()):
            return None
        if limit_kib is not None and not limit_kib.is_integer():
            return None
        lines = self._success_lines.get(run.task_name)
        if (
            lines is None
            or lines.pid != m["pid"]  # (a fork resets the cache too: _forget_stores)
            or lines.hostname != run.hostname
            or lines.pool != run.pool
            or lines.peak_source != m["peak_source"]
            or lines.gc != gc
        ):
            lines = self._success_lines[run.task_name] = SuccessLines(
                run.task_name, m["pid"], run.hostname, run.pool, m["peak_source"], gc
            )
        return lines.line(
            run.task_id,
            run.attempt,
            start,
            finish,
            peak,
            round(m["started_at"] * 1e6),
            round(m["duration_s"] * 1e9),
            m["overlapped"],
            limit_kib,
            None if percent is None else round(percent * 10),
        )

    def _limit_and_percent(self, m: dict) -> tuple[float | None, float | None]:
        """The record's ``limit_mb`` and ``process_percent`` from the monitor's figures: the effective limit
        (:meth:`limit_mb`), and the peak's percentage of it when that is not the limit the monitor found."""
        found_limit, peak = m["limit_mb"], m["peak_mb"]
        limit = self.limit_mb(found_limit)
        if limit and peak is not None and limit != found_limit:
            return limit, percent_of(peak, limit)
        return limit, m["process_percent"]

    def _record(self, run: TaskRun, state: str, m: dict) -> TaskMemory:
        limit, percent = self._limit_and_percent(m)
        peak = m["peak_mb"]
        # Every field, from the monitor's dict (same names) and the run: one record per task. Filling a copy of
        # the blank record (keys already in field order) costs ~35% less than a 28-key dict literal.
        v = TaskMemory.blank_fields()
        v["task_id"] = run.task_id
        v["task_name"] = run.task_name
        v["state"] = state
        v["pid"] = m["pid"]
        v["hostname"] = run.hostname
        v["pool"] = run.pool
        v["attempt"] = run.attempt
        v["start_mb"] = m["start_mb"]
        v["finish_mb"] = m["finish_mb"]
        v["peak_mb"] = peak
        v["delta_mb"] = m["delta_mb"]
        v["peak_delta_mb"] = m["peak_delta_mb"]
        v["peak_source"] = m["peak_source"]
        v["heap"] = m["heap"]
        v["checkpoints"] = m["checkpoints"]
        v["gc"] = m["gc"]
        v["started_at"] = m["started_at"]
        v["duration_s"] = m["duration_s"]
        v["overlapped"] = m["overlapped"]
        v["limit_mb"] = limit
        v["process_percent"] = percent
        v["exception"] = run.exception
        v["run_tag"] = run.run_tag
        v["children"] = run.children
        v["errors"] = m["errors"]
        v["version"] = RECORD_VERSION  # signal and suspected_oom: None (WORKER_LOST records only)
        return TaskMemory.from_fields(v)

    def note_exception(self, task_id: str, attempt: int, exc: BaseException | None) -> bool:
        run = current_run.get()
        if run is None or run.task_id != task_id or run.attempt != attempt:
            run = _running.get((task_id, attempt))
        if run is None:
            return False
        if exc is not None:
            run.exception = f"{type(exc).__name__}: {exc}"
        return True

    def worker_lost(self, task, task_id: str, exc: BaseException) -> None:
        """In the prefork parent: report a child that died while running ``task_id``."""
        persisted = read_inflight(self.options.inflight_dir, task_id)
        before = _worker["oom_kills"]
        now = oom_kill_count()
        _worker["oom_kills"] = now
        record = worker_lost_record(
            task_id,
            task.name,
            exc,
            persisted,
            oom_kills_before=before,
            oom_kills_now=now,
            limit_mb=self.limit_mb((persisted or {}).get("limit_mb")),
            near_percent=self.options.oom_near_percent,
        )
        self.log.warning(
            "Memory [%s] WORKER_LOST (signal=%s, suspected_oom=%s, last peak=%sMB) [task_id=%s]",
            record.task_name,
            record.signal,
            record.suspected_oom,
            record.peak_mb,
            task_id,
            extra={"memguard": {"event": "worker_lost", **record.as_dict()}},
        )
        self.deliver(record, backend=task.backend)


def _checkpoint_persister(inflight: InflightFile | None):
    if inflight is None:
        return None

    def on_event(event: str, payload: dict) -> None:
        if event == "checkpoint":
            inflight.on_checkpoint(payload)

    return on_event


def _attempt(request) -> int:
    return int(getattr(request, "retries", 0) or 0) if request is not None else 0


def _memguard_headers(fields: dict) -> tuple[Any, Any]:
    """The run tag and full-GC headers of a request, from its instance dict (Celery copies message headers into
    it) or its ``headers``; both are usually absent, so this is two dict misses in the common case."""
    run_tag, full_gc = fields.get(RUN_TAG_HEADER), fields.get(FULL_GC_HEADER)
    if run_tag is None or full_gc is None:
        headers = fields.get("headers")
        if headers:
            if run_tag is None:
                run_tag = headers.get(RUN_TAG_HEADER)
            if full_gc is None:
                full_gc = headers.get(FULL_GC_HEADER)
    return run_tag, full_gc


# -- signal receivers: one set for every instrumented app ----------------------------------------------------------
def _instrumentation_of(task) -> Instrumentation | None:
    # A worker serves one app: the last one found answers without a WeakKeyDictionary lookup (which builds a
    # weak reference per call), for as long as it is the app's instrumentation (``active``).
    app = getattr(task, "_app", None) or getattr(task, "app", None)
    last = _last_found[0]
    if last is not None and last.app is app and last.active:
        return last
    instr = _by_app.get(app) if app is not None else None
    if instr is not None:
        _last_found[0] = instr
    return instr


_last_found: list[Instrumentation | None] = [None]


def _on_prerun(sender=None, task_id=None, task=None, **_):
    task = task or sender
    instr = _instrumentation_of(task)
    if instr is not None:
        instr.start(task, task_id)


def _on_postrun(sender=None, task_id=None, task=None, state=None, **_):
    # The run is found through the context its task_prerun set (the same thread/greenlet), else by key; either way
    # not by app: a task started before uninstrument() must still finish its monitor.
    run = current_run.get()
    if run is None or run.task_id != task_id:
        run = _running.get((task_id, _attempt((task or sender).request)))
        if run is None:
            return
    _running.pop((task_id, run.attempt), None)
    run.instrumentation.finish(run, task or sender, state)


def _on_failure(sender=None, task_id=None, exception=None, **_):
    instr = _instrumentation_of(sender)
    if instr is None:
        return
    if instr.note_exception(task_id, _attempt(sender.request), exception):
        return
    from billiard.exceptions import WorkerLostError

    if isinstance(exception, WorkerLostError):
        instr.worker_lost(sender, task_id, exception)


def _on_retry(sender=None, request=None, reason=None, **_):
    instr = _instrumentation_of(sender)
    if instr is not None and request is not None:
        instr.note_exception(request.id, _attempt(request), getattr(reason, "exc", None) or reason)


def _on_before_publish(sender=None, headers=None, **_):
    """Note child tasks of a running task and carry its run tag to them (see :mod:`.collect` for the caller)."""
    run = current_run.get()
    if run is None or headers is None:
        return
    child_id = headers.get("id")
    if child_id and child_id != run.task_id:
        run.children.append(child_id)
    if run.run_tag and RUN_TAG_HEADER not in headers:
        headers[RUN_TAG_HEADER] = run.run_tag


def _on_worker_init(sender=None, **_):
    _worker["pool"] = _pool_name(getattr(sender, "pool_cls", None))
    _worker["oom_kills"] = oom_kill_count()
    if any(instr.options.metrics for instr in list(_by_app.values())):
        from .metrics import multiprocess_problem

        problem = multiprocess_problem(_worker["pool"])
        if problem:
            logger.warning(problem)


def _on_process_shutdown(**_):
    close_slots()  # a child stopping normally has no death to report: its slot goes with it


_RECEIVERS = [
    (signals.task_prerun, _on_prerun),
    (signals.task_postrun, _on_postrun),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.before_task_publish, _on_before_publish),
    (signals.worker_init, _on_worker_init),
    (signals.worker_process_shutdown, _on_process_shutdown),
]
_connected = {"on": False}


def _connect() -> None:
    if _connected["on"]:
        return
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=f"memguard.{receiver.__name__}")
    _connected["on"] = True


def _disconnect() -> None:
    if not _connected["on"]:
        return
    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=f"memguard.{receiver.__name__}")
    _connected["on"] = False


def instrument(app, **options: Any) -> Instrumentation:
    """Measure every task of ``app``: log START/checkpoints/FINISH (FAILURE, RETRY) in the seed's format with the
    task id, run the GC policy after each task, warn over thresholds, and deliver a ``TaskMemory`` per execution.

    ``options`` are the monitor's settings (``gc_policy="always"``, ``warn_peak_mb=500``, …) and the Celery
    layer's (:mod:`.options`); they also come from ``app.conf.memguard_*`` and ``MEMGUARD_*``. Idempotent: a second
    call returns the same instrumentation, re-resolved with any new options. Call it where the app is defined, so
    the worker (``celery -A``) and the caller both run it.
    """
    with _lock:
        existing = _by_app.get(app)
        if existing is not None and not options:
            return existing
        merged = {**(existing.overrides if existing else {}), **options}
        instr = Instrumentation(app, merged)
        _by_app[app] = instr
        if existing is not None:
            existing.active = False
        _connect()
    return instr


def uninstrument(app) -> bool:
    """Undo :func:`instrument` for ``app`` (tasks already running finish unmeasured). Returns whether it was
    instrumented. Signals are disconnected when no app remains instrumented."""
    with _lock:
        instr = _by_app.pop(app, None)
        if instr is not None:
            instr.active = False
        if not len(_by_app):
            _disconnect()
    return instr is not None


@contextlib.contextmanager
def suspended(app):
    """Leave ``app``'s tasks unmeasured for the block (no monitor, no record), then measure them again as before.

    For the leak hunter's eager runs of a task: each record it would deliver (the in-process registry keeps up to
    ``LOCAL_CAPACITY``) would be growth of the hunt's own, not of the task."""
    with _lock:
        instr = _by_app.pop(app, None)
        if instr is not None:
            instr.active = False
    try:
        yield instr
    finally:
        if instr is not None:
            with _lock:
                if _by_app.setdefault(app, instr) is instr:
                    instr.active = True
                _connect()


def instrumentation(app) -> Instrumentation | None:
    """The active instrumentation of ``app``, if any."""
    return _by_app.get(app)


def _forget_stores() -> None:
    """In a forked child: result backends (their connections) belong to the parent; each child builds its own."""
    for instr in list(_by_app.values()):
        instr._store = None
        instr._writer = None
        instr._write = None
        instr._write_line = None
        instr._success_lines = {}  # their text holds the parent's pid


def _flush_pending_records(**_) -> None:
    flush_all()


def _flush_records_at_shutdown() -> None:
    """Flush batched records when a worker process stops (connected once, whatever is instrumented then)."""
    for signal in (signals.worker_process_shutdown, signals.worker_shutdown):
        signal.connect(_flush_pending_records, weak=False, dispatch_uid="memguard.flush_records")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_stores)


def running_tasks() -> list[TaskRun]:
    """Executions being measured in this process right now (for diagnostics and the pytest plugin)."""
    return list(_running.values())  # one C-level copy: atomic under the GIL, like the stores and pops of _running
