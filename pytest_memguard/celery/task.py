"""``MonitoredTask``: a base class for tasks (``base=MonitoredTask`` or ``Celery(task_cls=MonitoredTask)``).

It gives the seed's ``self.memory_checkpoint(label)`` and instruments its app when bound, so choosing the base
class is enough. The per-execution state is not on the task object (one object serves concurrent executions in a
threads pool): ``memory_checkpoint`` goes through the running monitor's contextvar, exactly like the free function
:func:`pytest_memguard.checkpoint`.
"""

from __future__ import annotations

from celery import Task

from ..runtime.monitor import checkpoint, current_monitor
from .lifecycle import instrument, instrumentation
from .options import resolve_options


class MonitoredTask(Task):
    """A Celery task measured by ``pytest_memguard.celery``; see the module docstring."""

    #: Instrument the app this task is bound to (with options from ``app.conf``/environment) if it is not yet;
    #: ``app.conf.memguard_auto_instrument = False`` (or ``MEMGUARD_AUTO_INSTRUMENT=0``) turns that off per app.
    memguard_auto_instrument = True

    @classmethod
    def on_bound(cls, app) -> None:
        super().on_bound(app)
        if (
            cls.memguard_auto_instrument
            and instrumentation(app) is None
            and resolve_options(app, {})[0].auto_instrument
        ):
            instrument(app)

    def memory_checkpoint(self, label: str) -> dict | None:
        """Record RSS and the peak so far at a named phase of this execution; ``None`` when not monitored."""
        return checkpoint(label)

    @property
    def memory_monitor(self):
        """The ``MemoryMonitor`` of the execution running in this thread/context, if any."""
        return current_monitor()
