"""Which task executions a block of code started, with the arguments they were started with: :class:`SendLog`.

Why: ``--hunt-leaks`` hunts each Celery task a test ran on its own (:mod:`.hunt`), which means running it again
*with the same arguments*. Records (``TaskMemory``) say which task ran, not with what, so the arguments are taken
where they are still known:

- a message this process publishes outside a running task (``before_task_publish``): the test's ``delay()``,
  ``apply_async()``, ``celery_run`` in worker mode — its body carries ``(args, kwargs, embed)`` (protocol 2) or a
  dict with ``args``/``kwargs`` (protocol 1);
- an eager execution in this process (``task_prerun`` of an eager request): ``apply()`` and ``task_always_eager``.

Children a worker's task sends are published in the worker, out of sight: their records name them and the hunt
reports them as not hunted. A body this module cannot read gives a :class:`SentTask` with ``known=False`` rather
than a guess. At most :data:`MAX_SENDS` are kept (a test sending thousands of tasks hunts the first ones).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from celery import signals

MAX_SENDS = 200
_active: list[SendLog] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class SentTask:
    """One task execution started by the block: its name, id and arguments (``known=False``: unreadable)."""

    name: str
    task_id: str | None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    known: bool = True
    eager: bool = False

    def label(self, limit: int = 80) -> str:
        """``fixtures.leaky(2, mb=1)`` — bounded, for report lines."""
        if not self.known:
            return f"{self.name}(?)"
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = ", ".join(parts)
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        return f"{self.name}({text})"

    def key(self) -> tuple[str, str, str]:
        """Identity of a *distinct* execution: same task, same arguments (by ``repr``)."""
        return self.name, repr(self.args), repr(sorted(self.kwargs.items()))


def _body_arguments(body: Any) -> tuple[tuple, dict] | None:
    if isinstance(body, (tuple, list)) and len(body) >= 2 and isinstance(body[1], dict):
        return tuple(body[0] or ()), dict(body[1])
    if isinstance(body, dict) and "args" in body:
        return tuple(body.get("args") or ()), dict(body.get("kwargs") or {})
    return None


def _record(sent: SentTask) -> None:
    with _lock:
        logs = list(_active)
    for log in logs:
        log._add(sent)


def _on_publish(sender=None, body=None, headers=None, **_: Any) -> None:
    from .lifecycle import current_run

    if current_run.get() is not None or not _active:
        return  # a running task's child: an execution of its own, not one the block started
    headers = headers or {}
    name = headers.get("task") or (body.get("task") if isinstance(body, dict) else None) or str(sender)
    found = _body_arguments(body)
    if found is None:
        _record(SentTask(name, headers.get("id"), known=False))
    else:
        _record(SentTask(name, headers.get("id"), found[0], found[1]))


def _on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **_: Any) -> None:
    task = task or sender
    if not _active or not getattr(getattr(task, "request", None), "is_eager", False):
        return  # a worker's execution: its message was logged when it was published
    _record(SentTask(task.name, task_id, tuple(args or ()), dict(kwargs or {}), eager=True))


class SendLog:
    """``with SendLog() as log: ...; log.sent`` — every task execution started inside the block (see the module)."""

    def __init__(self, limit: int = MAX_SENDS) -> None:
        self.limit = limit
        self.sent: list[SentTask] = []
        self.dropped = 0

    def _add(self, sent: SentTask) -> None:
        if len(self.sent) < self.limit:
            self.sent.append(sent)
        else:
            self.dropped += 1

    def __enter__(self) -> SendLog:
        with _lock:
            _active.append(self)
            signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="memguard.sends.publish")
            signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="memguard.sends.prerun")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop logging (idempotent); what was logged stays."""
        with _lock:
            if self in _active:
                _active.remove(self)
            if not _active:
                signals.before_task_publish.disconnect(_on_publish, dispatch_uid="memguard.sends.publish")
                signals.task_prerun.disconnect(_on_prerun, dispatch_uid="memguard.sends.prerun")

    def distinct(self) -> list[SentTask]:
        """One per distinct (task, arguments), in the order first seen; unreadable ones all kept."""
        seen: set[tuple[str, str, str]] = set()
        found: list[SentTask] = []
        for sent in self.sent:
            if not sent.known:
                found.append(sent)
                continue
            key = sent.key()
            if key not in seen:
                seen.add(key)
                found.append(sent)
        return found
