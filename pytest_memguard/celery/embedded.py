"""The embedded default: a broker and a result backend in one folder, no server.

``embedded_app_config(folder)`` returns Celery settings for the robust ``memguard-fs://`` transport
(:mod:`.transport`) and the atomic ``file://`` backend (:mod:`.backend`), both under ``folder``. Any process that
uses the same folder (the caller, a prefork worker and its children) talks through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .backend import file_backend_url
from .transport import DEFAULT_POLLING_INTERVAL_S, TRANSPORT_NAME


def embedded_app_config(
    folder: str | os.PathLike, *, polling_interval: float = DEFAULT_POLLING_INTERVAL_S, worker_lost_wait: float = 1.0
) -> dict:
    """Settings for ``app.conf.update(...)``: broker ``memguard-fs://`` and backend ``file://`` under ``folder``.

    ``worker_lost_wait`` defaults to 1 s instead of Celery's 10 s: with a local backend there is no result in flight
    to wait for, and a SIGKILLed child is then reported in about a second instead of eleven.
    """
    if polling_interval <= 0:
        raise ValueError(f"polling_interval must be > 0 seconds, got {polling_interval!r}")
    root = Path(folder).absolute()
    messages, control, results = root / "messages", root / "control", root / "results"
    for path in (messages, control, results):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": f"{TRANSPORT_NAME}://",
        "broker_transport_options": {
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "control_folder": str(control),
            "polling_interval": polling_interval,
        },
        "result_backend": file_backend_url(results),
        "worker_lost_wait": worker_lost_wait,
    }
