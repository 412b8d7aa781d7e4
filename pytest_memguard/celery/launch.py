"""``python -m pytest_memguard.celery.launch <celery arguments>``: Celery's own CLI, plus a ready file.

Why a launcher: the worker's readiness must be awaited without relying on the broker (remote control needs a
broadcast-capable transport and a live connection) and without asking the app to import anything. This connects
``worker_ready`` to write the file named by ``MEMGUARD_WORKER_READY_FILE``, then hands over to ``celery``.
"""

from __future__ import annotations

import os
import sys

READY_ENV = "MEMGUARD_WORKER_READY_FILE"


def _write_ready_file(sender=None, **_) -> None:
    path = os.environ.get(READY_ENV)
    if path:
        hostname = getattr(sender, "hostname", "") or ""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {hostname}\n")
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    from celery import signals
    from celery.__main__ import main as celery_main

    signals.worker_ready.connect(_write_ready_file, weak=False, dispatch_uid="memguard.ready_file")
    sys.argv = ["celery", *(sys.argv[1:] if argv is None else argv)]
    celery_main()


if __name__ == "__main__":
    main()
