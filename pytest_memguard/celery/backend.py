"""``file://`` result backend whose writes are atomic.

Why: Celery's ``FilesystemBackend.set`` opens the result file with truncation and then writes, so a caller polling
``AsyncResult.get()`` can read an empty or partial file in between. Under a soak that is a real (if rare) decode
error. This subclass writes to a temporary name and renames into place; everything else is Celery's.

Use it with Celery's ``<class path>+<url>`` form (no registration needed, works in any process)::

    app.conf.result_backend = f"{FILE_BACKEND}+file:///path/to/results"
"""

from __future__ import annotations

import os

from celery.backends.filesystem import FilesystemBackend
from kombu.utils.encoding import ensure_bytes

from .transport import atomic_write

FILE_BACKEND = "pytest_memguard.celery.backend:AtomicFilesystemBackend"


class AtomicFilesystemBackend(FilesystemBackend):
    """Celery's file backend with write-then-rename ``set``."""

    def set(self, key, value):
        path = self._filename(key)
        folder, name = os.path.split(os.fsdecode(path))
        atomic_write(folder, name, ensure_bytes(value))


def file_backend_url(folder: str | os.PathLike) -> str:
    """The ``result_backend`` value for an atomic file backend in ``folder`` (created if missing)."""
    path = os.path.abspath(os.fspath(folder))
    os.makedirs(path, exist_ok=True)
    return f"{FILE_BACKEND}+file://{path}"
