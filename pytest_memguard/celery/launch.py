"""``python -m pytest_memguard.celery.launch <celery arguments>``: Celery's own CLI, plus a ready file.

Why a launcher: the worker's readiness must be awaited without relying on the broker (remote control needs a
broadcast-capable transport and a live connection) and without asking the app to import anything. This connects
``worker_ready`` to write the file named by ``MEMGUARD_WORKER_READY_FILE``, then hands over to ``celery``.
"""

from __future__ import annotations

import os
import sys

READY_ENV = "MEMGUARD_WORKER_READY_FILE"
#: JSON object of Celery settings applied to the worker's app in ``celeryd_init`` (before its queues, broker
#: connection and result backend are set up), so a test runner can point ANY app at its own broker folder and queue
#: without the app reading the environment. ``"memguard_instrument": true`` in it also instruments the app.
CONFIG_ENV = "MEMGUARD_WORKER_CONFIG"


def _write_ready_file(sender=None, **_) -> None:
    path = os.environ.get(READY_ENV)
    if path:
        hostname = getattr(sender, "hostname", "") or ""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {hostname}\n")
        os.replace(tmp, path)


def _apply_config(sender=None, instance=None, conf=None, **_) -> None:
    text = os.environ.get(CONFIG_ENV)
    if not text or conf is None:
        return
    import json

    settings = json.loads(text)
    do_instrument = settings.pop("memguard_instrument", False)
    conf.update(settings)
    if do_instrument and instance is not None:
        from .lifecycle import instrument

        instrument(instance.app)


def main(argv: list[str] | None = None) -> None:
    from celery import signals
    from celery.__main__ import main as celery_main

    signals.worker_ready.connect(_write_ready_file, weak=False, dispatch_uid="memguard.ready_file")
    signals.celeryd_init.connect(_apply_config, weak=False, dispatch_uid="memguard.worker_config")
    sys.argv = ["celery", *(sys.argv[1:] if argv is None else argv)]
    celery_main()


if __name__ == "__main__":
    main()
