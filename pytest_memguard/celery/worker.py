"""``start_worker_process``: a REAL ``celery worker`` subprocess for any app, as a context manager.

Like ``celery.contrib.testing.worker.start_worker``, but a separate process started through Celery's CLI, so the
prefork pool forks real children that can be measured, leak, and die. Readiness is awaited on a ready file
(written on ``worker_ready`` by :mod:`.launch`), the log goes to a file, and shutdown is bounded: SIGTERM (warm
shutdown), then SIGKILL to the whole process group after ``shutdown_timeout``. The pytest worker fixture wraps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .launch import CONFIG_ENV, READY_ENV

POOLS = ("prefork", "solo", "threads", "gevent", "eventlet")


class WorkerStartError(RuntimeError):
    """The worker exited or did not become ready in time; the message carries the end of its log."""


@dataclass
class WorkerProcess:
    """A running worker: its process, hostname, log file and the arguments it was started with."""

    process: subprocess.Popen
    hostname: str
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def child_pids(self) -> list[int]:
        """Pool children (prefork) of the worker's main process."""
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []

    def stop(self, timeout: float = 10.0) -> int | None:
        """Warm shutdown, bounded: SIGTERM, then SIGKILL to the process group after ``timeout`` seconds."""
        proc = self.process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray pool children of a finished or stuck worker
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return proc.returncode


def worker_argv(
    app_path: str,
    *,
    pool: str,
    concurrency: int,
    hostname: str,
    broker: str | None,
    backend: str | None,
    queues: Sequence[str] | None,
    loglevel: str,
    extra_args: Sequence[str],
) -> list[str]:
    argv = [sys.executable, "-m", "pytest_memguard.celery.launch", "-A", app_path]
    if broker:
        argv += ["-b", broker]
    if backend:
        argv += ["--result-backend", backend]
    argv += ["worker", "-P", pool, "-c", str(concurrency), "-n", hostname, "-l", loglevel]
    argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    if queues:
        argv += ["-Q", ",".join(queues)]
    return argv + list(extra_args)


@contextlib.contextmanager
def start_worker_process(
    app_path: str,
    *,
    pool: str = "prefork",
    concurrency: int = 1,
    broker: str | None = None,
    backend: str | None = None,
    queues: Sequence[str] | None = None,
    loglevel: str = "INFO",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    config: Mapping[str, object] | None = None,
    log_path: str | os.PathLike | None = None,
    hostname: str | None = None,
    cwd: str | os.PathLike | None = None,
    ready_timeout: float = 30.0,
    shutdown_timeout: float = 10.0,
) -> Iterator[WorkerProcess]:
    """Start ``celery -A app_path worker`` in a subprocess, wait until it consumes, yield it, stop it (bounded).

    ``app_path`` is what ``-A`` takes (``"fixtures.celery_app"``). ``broker``/``backend`` override the app's (Celery's
    ``-b``/``--result-backend``); ``env`` is added to this process's environment; ``extra_args`` go after the
    worker options (e.g. ``["--max-memory-per-child", "200000"]``); ``config`` (JSON-able Celery settings) is
    applied to the worker's app before it connects (``"memguard_instrument": True`` also instruments it).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {pool!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    if ready_timeout <= 0 or shutdown_timeout <= 0:
        raise ValueError("ready_timeout and shutdown_timeout must be positive seconds")
    hostname = hostname or f"memguard-{uuid.uuid4().hex[:8]}@%h"
    workdir = Path(tempfile.mkdtemp(prefix="memguard-worker-"))
    log_file = Path(log_path) if log_path else workdir / "worker.log"
    ready_file = workdir / "ready"
    argv = worker_argv(
        app_path,
        pool=pool,
        concurrency=concurrency,
        hostname=hostname,
        broker=broker,
        backend=backend,
        queues=queues,
        loglevel=loglevel,
        extra_args=extra_args,
    )
    child_env = {**os.environ, **(env or {}), READY_ENV: str(ready_file)}
    if config:
        child_env[CONFIG_ENV] = json.dumps(dict(config))
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=os.fspath(cwd) if cwd else None,
            start_new_session=True,
        )
    worker = WorkerProcess(process, hostname, log_file, argv)
    try:
        _await_ready(worker, ready_file, ready_timeout)
        yield worker
    finally:
        worker.stop(shutdown_timeout)


def _await_ready(worker: WorkerProcess, ready_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if not worker.alive():
            raise WorkerStartError(
                f"celery worker exited with code {worker.process.returncode} before it was ready "
                f"(command: {' '.join(worker.argv)}); log tail:\n{worker.log_tail()}"
            )
        if time.monotonic() > deadline:
            worker.stop(5.0)
            raise WorkerStartError(
                f"celery worker not ready within {timeout:g}s (command: {' '.join(worker.argv)}); log tail:\n"
                f"{worker.log_tail()}"
            )
        time.sleep(0.02)
