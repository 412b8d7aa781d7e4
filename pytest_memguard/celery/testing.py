"""Running an app's REAL tasks under test, eagerly or on a real worker, from any script (the pytest fixtures wrap it).

Why here and not in the plugin (Celery's ``contrib/testing`` shape, ``STYLE.md``): a script, a benchmark or another
test runner needs the same two things the fixtures need, and none of it needs pytest:

- :func:`eager_tasks` — ``task_always_eager`` for the block: ``delay()``/``apply_async()`` run in this process,
  under the monitor that :func:`~pytest_memguard.celery.instrument` attaches, each producing a ``TaskMemory``;
- :func:`worker_session` — a real ``celery worker`` subprocess (:func:`~.worker.start_worker_process`) on a broker of
  its own (the embedded ``memguard-fs://`` broker in a folder by default, or a broker URL), with THIS process's app
  pointed at the same broker, backend and queue for the block, and put back afterwards.

The worker gets its settings through the launcher (``MEMGUARD_WORKER_CONFIG``, applied in ``celeryd_init``), so any
app works — it need not read its broker from the environment — and it is instrumented there even if its module
does not call ``instrument``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import file_backend_url
from .collect import TaskMemoryCollector, TaskMemoryTimeout, task_memories
from .embedded import embedded_app_config
from .lifecycle import instrument
from .records import TaskMemory
from .worker import WorkerProcess, start_worker_process

APP_PATH_HELP = "write it as 'pkg.module:app' (the module that defines the Celery app, a colon, the attribute name)"


class AppPathError(ValueError):
    """An app path that cannot be imported; the message names it and says how to write it."""


def load_app(path: str):
    """Import ``"pkg.module:app"`` (or ``"pkg.module"``, whose ``app``/``celery`` attribute is taken, as ``-A``)."""
    text = (path or "").strip()
    module_name, _, attr = text.partition(":")
    if (
        not module_name
        or any(not part.isidentifier() for part in module_name.split("."))
        or (attr and not all(part.isidentifier() for part in attr.split(".")))
    ):
        raise AppPathError(f"Celery app path {path!r} is not valid; {APP_PATH_HELP}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppPathError(
            f"Celery app path {path!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc}); "
            f"check the name and that its folder is on sys.path (e.g. pytest's pythonpath ini key); {APP_PATH_HELP}"
        ) from None
    candidates = [attr] if attr else ["app", "celery"]
    for name in candidates:
        obj: Any = module
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if hasattr(obj, "tasks") and hasattr(obj, "conf"):
            return obj
        raise AppPathError(
            f"Celery app path {path!r}: {module_name}.{name} is a {type(obj).__name__}, not a Celery app"
        )
    raise AppPathError(
        f"Celery app path {path!r}: module {module_name!r} has no attribute {' or '.join(candidates)!r}; "
        f"{APP_PATH_HELP}"
    )


def app_import_path(app) -> str | None:
    """``"pkg.module:attr"`` of a loaded module that holds ``app`` (what the worker's ``-A`` needs), or ``None``.

    For an app handed over as an object (an overridden fixture). Installed packages are searched last, so the
    project's own module is named when both hold the app."""
    own, installed = [], []
    for module in list(sys.modules.values()):
        if module is None or getattr(module, "__name__", "__main__") == "__main__":
            continue
        file = getattr(module, "__file__", None) or ""
        (installed if "site-packages" in file or not file else own).append(module)
    for module in own + installed:
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for name, value in items:
            if value is app and not name.startswith("_"):
                return f"{module.__name__}:{name}"
    return None


@contextlib.contextmanager
def eager_tasks(app) -> Iterator[Any]:
    """Run the app's tasks in this process for the block (``task_always_eager``), instrumented; restored after.

    ``task_eager_propagates`` is left as the app has it: a failing task's ``result.get()`` raises either way,
    as it would with a worker."""
    instrument(app)
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield app
    finally:
        app.conf.task_always_eager = previous


def reset_connections(app) -> None:
    """Forget the app's broker pool, AMQP router and result backend, so changed settings take effect.

    Celery caches all three on first use (``app.pool``, the ``amqp`` cached property, ``app.backend``); changing
    ``broker_url`` or ``task_default_queue`` afterwards is otherwise silently ignored."""
    pool = app._pool
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.force_close_all()
    app._pool = None
    app.__dict__.pop("amqp", None)
    app._backend_cache = None
    app._local = threading.local()


@contextlib.contextmanager
def configured(app, settings: Mapping[str, Any]) -> Iterator[Any]:
    """Apply ``settings`` to ``app.conf`` for the block, then put the previous values (and connections) back."""
    missing = object()
    previous = {key: app.conf.get(key, missing) for key in settings}
    app.conf.update(dict(settings))
    reset_connections(app)
    try:
        yield app
    finally:
        for key, value in previous.items():
            if value is missing:
                app.conf.pop(key, None)
            else:
                app.conf[key] = value
        reset_connections(app)


def session_settings(
    folder: str | os.PathLike, *, queue: str, broker: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """Celery settings for a test session: the embedded broker in ``folder`` unless ``broker`` is given; the result
    backend ``backend``, else the broker's own when it is Redis, else an atomic ``file://`` backend in ``folder``."""
    root = Path(folder)
    settings = embedded_app_config(root) if not broker else {"broker_url": broker, "broker_transport_options": {}}
    if backend:
        settings["result_backend"] = backend
    elif broker and broker.startswith(("redis://", "rediss://")):
        settings["result_backend"] = broker
    elif broker:
        (root / "results").mkdir(parents=True, exist_ok=True)
        settings["result_backend"] = file_backend_url(root / "results")
    settings.update(
        task_default_queue=queue,
        worker_lost_wait=1.0,  # a SIGKILLed child is reported in ~1 s, not Celery's default 10 s
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        memguard_inflight_dir=str(root / "inflight"),
    )
    return settings


@dataclass
class WorkerSession:
    """A running worker and the settings its caller uses; :meth:`ensure_alive` restarts a worker that died."""

    app: Any
    app_path: str
    settings: dict[str, Any]
    folder: Path
    queue: str
    pool: str
    concurrency: int
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    worker: WorkerProcess | None = None
    restarts: int = 0
    _stack: contextlib.ExitStack | None = None

    def start(self) -> WorkerProcess:
        stack = contextlib.ExitStack()
        n = self.restarts
        try:
            self.worker = stack.enter_context(
                start_worker_process(
                    self.app_path,
                    pool=self.pool,
                    concurrency=self.concurrency,
                    queues=[self.queue],
                    env=self.env,
                    config={**self.settings, "memguard_instrument": True},
                    log_path=self.folder / f"worker{'-' + str(n) if n else ''}.log",
                    hostname=f"{self.queue}-w{n}@%h",
                    ready_timeout=self.ready_timeout,
                )
            )
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self.worker

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def ensure_alive(self) -> WorkerProcess:
        """The running worker; a dead one (its main process killed) is stopped and replaced."""
        if not self.alive():
            self.stop()
            self.restarts += 1
            self.start()
        assert self.worker is not None
        return self.worker


def _child_path() -> str:
    """This process's ``sys.path`` as ``PYTHONPATH``, so the worker imports the app exactly as the caller did."""
    entries = [p or os.getcwd() for p in sys.path]
    if os.environ.get("PYTHONPATH"):
        entries += os.environ["PYTHONPATH"].split(os.pathsep)
    return os.pathsep.join(dict.fromkeys(e for e in entries if e and os.path.isdir(e)))


@contextlib.contextmanager
def worker_session(
    app,
    app_path: str,
    folder: str | os.PathLike,
    *,
    broker: str | None = None,
    backend: str | None = None,
    queue: str | None = None,
    pool: str = "prefork",
    concurrency: int = 1,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> Iterator[WorkerSession]:
    """A real worker for ``app`` (imported by the worker as ``app_path``), on its own broker/queue, with ``app``
    in this process configured to send to it until the block ends. Readiness is awaited; stopping is bounded."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    queue = queue or f"memguard-{uuid.uuid4().hex[:10]}"
    settings = session_settings(root, queue=queue, broker=broker, backend=backend)
    child_env = {"PYTHONPATH": _child_path(), **(env or {})}
    instrument(app)
    session = WorkerSession(app, app_path, settings, root, queue, pool, concurrency, child_env, ready_timeout)
    with configured(app, settings):
        session.start()
        try:
            yield session
        finally:
            session.stop()


def gather_records(
    collector: TaskMemoryCollector, timeout: float, *, alive=lambda: True, step: float = 0.5
) -> tuple[list[TaskMemory], list[str]]:
    """Every record of the collector's run, waiting up to ``timeout`` — less when ``alive()`` says the worker died.

    Returns ``(records, ids of sent tasks without a record)``; never raises for a missing record, so a caller can
    report what it has (a test that ends must not hang on a worker that is gone)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        remaining = deadline - time.monotonic()
        try:
            return collector.records(timeout=max(0.0, min(step, remaining))), []
        except TaskMemoryTimeout:
            if remaining <= 0 or not alive():
                break
    with collector._lock:
        records = list(collector._local)
        ids = list(dict.fromkeys(collector.task_ids))
    seen = {(r.task_id, r.attempt) for r in records}
    missing: list[str] = []
    for task_id in ids:
        try:
            found = task_memories([task_id], timeout=0.0, app=collector.app)
        except TaskMemoryTimeout:
            missing.append(task_id)
            continue
        records.extend(r for r in found if (r.task_id, r.attempt) not in seen)
        seen.update((r.task_id, r.attempt) for r in found)
    return records, missing
