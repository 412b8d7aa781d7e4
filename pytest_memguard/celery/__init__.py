"""Celery integration: every task measured, in any pool, with the figures delivered back to the caller.

Instrument the app where it is defined (so both the worker and the caller run it)::

    from celery import Celery
    from pytest_memguard.celery import instrument

    app = Celery("proj", broker="redis://localhost:6379/0", backend="redis://localhost:6379/1")
    instrument(app)                      # or options: instrument(app, gc_policy="always", warn_peak_mb=500)

Every task then logs the seed's lines with its id added::

    Memory [proj.tasks.process] START: RSS=245.3MB (peak=245.3MB), Process%=6.1%, System=45.2% [task_id=…]
    Memory [proj.tasks.process] checkpoint:after_chunking: RSS=512.7MB (peak=512.7MB), … [task_id=…]
    Memory [proj.tasks.process] FINISH (delta=+125.4MB, peak=512.7MB): RSS=370.7MB (peak=512.7MB), … [task_id=…]

(``FAILURE (…)``/``RETRY (…)`` instead of ``FINISH`` on those paths). Mark phases from the task or from any library
code it calls::

    @app.task(base=MonitoredTask, bind=True)
    def process(self, doc_id):
        chunks = chunk(load(doc_id))
        self.memory_checkpoint("after_chunking")     # or pytest_memguard.checkpoint("after_chunking") anywhere

Read what a task used, from the code that sent it (eager or through a worker)::

    result = process.delay(42)
    result.get(timeout=60)
    mem = task_memory(result, timeout=10)       # TaskMemory: peak_mb, peak_delta_mb, delta_mb, checkpoints, …
    print(mem.peak_delta_mb, mem.state, mem.pool)

    with collect_task_memories(app) as run:     # every task sent (and their children) while open
        group(process.s(i) for i in range(10))().get()
    for mem in run.records():
        print(mem.summary())

No server at hand? ``app.conf.update(embedded_app_config("/tmp/q"))`` gives a broker and a result backend in a folder
(a robust ``memguard-fs://`` transport and an atomic ``file://`` backend). ``start_worker_process("proj.app")`` runs
a real worker subprocess for tests and scripts. ``max_memory_per_child("4G", concurrency=4)`` returns the KiB that
``worker_max_memory_per_child`` expects. A prefork child killed by SIGKILL (e.g. the OOM killer) yields a
``WORKER_LOST`` record with the signal, ``suspected_oom`` and the last checkpoint and peak it reported.

Options (keyword arguments, ``app.conf.memguard_*`` or ``MEMGUARD_*``) are listed in :mod:`.options`.
This package never imports pytest.
"""

from .backend import FILE_BACKEND, AtomicFilesystemBackend, file_backend_url
from .collect import TaskMemoryCollector, TaskMemoryTimeout, collect_task_memories, task_memories, task_memory
from .embedded import embedded_app_config
from .lifecycle import Instrumentation, instrument, instrumentation, running_tasks, uninstrument
from .limits import max_memory_per_child
from .options import CeleryOptions
from .records import FAILURE, RETRY, SUCCESS, TERMINAL_STATES, WORKER_LOST, TaskMemory
from .store import RecordStoreError
from .task import MonitoredTask
from .transport import TRANSPORT_NAME
from .worker import WorkerProcess, WorkerStartError, start_worker_process

__all__ = [
    "FAILURE",
    "FILE_BACKEND",
    "RETRY",
    "SUCCESS",
    "TERMINAL_STATES",
    "TRANSPORT_NAME",
    "WORKER_LOST",
    "AtomicFilesystemBackend",
    "CeleryOptions",
    "Instrumentation",
    "MonitoredTask",
    "RecordStoreError",
    "TaskMemory",
    "TaskMemoryCollector",
    "TaskMemoryTimeout",
    "WorkerProcess",
    "WorkerStartError",
    "collect_task_memories",
    "embedded_app_config",
    "file_backend_url",
    "instrument",
    "instrumentation",
    "max_memory_per_child",
    "running_tasks",
    "start_worker_process",
    "task_memories",
    "task_memory",
    "uninstrument",
]
