"""Fixtures for the ``memguard`` command's tests: a real prefork Celery worker and a way to run the command.

The worker is a real ``celery worker --pool prefork -c 2`` process tree (``fixtures/cli_app.py``, filesystem
broker in a tmp dir) started once per session under a unique node name, so the tests find exactly their own worker
even when other test sessions run workers on the same machine. It is stopped with SIGTERM to its process group,
then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 10.0


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that imports this checkout (installed or not)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMGUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest_memguard.cli", *args]


def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``memguard ARGS`` as its own process, as a user or cron would."""
    return subprocess.run(
        cli_command(*args),
        cwd=REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_process_tree(proc: subprocess.Popen, timeout: float = WORKER_STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group (a started session), wait, then SIGKILL whatever is left."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)  # stragglers of the group (pool children)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        pass


@dataclass
class CeleryWorker:
    name: str  # unique node name: also the --workers / --pattern to find it
    main_pid: int
    child_pids: list[int]
    process: subprocess.Popen


@pytest.fixture(scope="session")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> CeleryWorker:
    """A running prefork worker with two pool children, found by its unique node name."""
    name = f"memguard-cli-{uuid.uuid4().hex[:12]}"
    folder = tmp_path_factory.mktemp("cli-broker")
    log_path = folder / "worker.log"
    command = [
        sys.executable, "-m", "celery", "-A", "fixtures.cli_app", "worker",
        "--pool", "prefork", "-c", "2", "-n", f"{name}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=cli_env(MEMGUARD_CLI_BROKER_DIR=str(folder)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        children: list[int] = []
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                children = sorted(c.pid for c in psutil.Process(proc.pid).children())
            except psutil.NoSuchProcess:
                children = []
            if len(children) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"celery worker did not start 2 pool children in {WORKER_START_TIMEOUT_S}s: {log_path}")
        yield CeleryWorker(name=name, main_pid=proc.pid, child_pids=children, process=proc)
    finally:
        stop_process_tree(proc)
