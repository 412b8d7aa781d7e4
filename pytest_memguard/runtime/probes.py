"""The cheapest honest readings of a process's memory.

Costs measured on our machines (``shared/MEASUREMENTS.md``): ``psutil.Process().memory_info()`` ~36 µs with its
construction, ``os.pread`` on a kept-open ``/proc/self/statm`` ~1.2 µs, writing ``5`` to ``/proc/self/clear_refs``
~0.4 µs and ``getrusage().ru_maxrss`` ~0.7 µs. So on Linux:

* current RSS comes from a kept-open ``statm`` descriptor;
* the peak between two marks is the kernel's high-water mark: reset it with ``clear_refs`` and read it back with
  ``getrusage`` (which the kernel derives from the same mark) — exact, whatever the spike's length;
* where the reset is refused or ``/proc`` is missing, :class:`PeakSampler` samples RSS from a thread instead, and
  every figure says so through its ``peak_source``.

Descriptors opened on ``/proc/self`` keep pointing at the process that opened them, so they are reopened in a
forked child (Celery's prefork pool forks after import).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable

PEAK_SOURCE_KERNEL = "kernel-hwm"

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# ru_maxrss is KiB on Linux, bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
_getrusage, _RUSAGE_SELF = resource.getrusage, resource.RUSAGE_SELF


def _ru_maxrss() -> int | None:
    """``getrusage``'s maximum RSS in bytes (the resettable mark on Linux, see ``_open_clear_refs``)."""
    try:
        return _getrusage(_RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT
    except (OSError, ValueError):
        return None


def sampled_source(interval_s: float) -> str:
    """The ``peak_source`` label of a sampled peak, e.g. ``sampled@10ms``."""
    return f"sampled@{interval_s * 1000:g}ms"


class ProcessProbe:
    """Readings of this process: RSS, VMS and the resettable high-water mark.

    One instance per process (see :func:`get_probe`). Methods never raise for a failed reading: they return
    ``None`` and the caller reports the figure as unknown.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statm_fd: int | None = None
        self._clear_refs_fd: int | None = None
        self._status_fd: int | None = None
        self._psutil_process = None
        self._use_status_for_hwm = False
        self.hwm_usable = False
        self.hwm_refusal: str | None = None
        self._open()

    # -- setup -------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._close()
        try:
            self._statm_fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            self._statm_fd = None
        self.hwm_usable, self.hwm_refusal = self._open_clear_refs()

    def _open_clear_refs(self) -> tuple[bool, str | None]:
        try:
            fd = os.open("/proc/self/clear_refs", os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            return False, f"/proc/self/clear_refs not writable ({exc.strerror or exc})"
        try:
            os.write(fd, b"5")
        except OSError as exc:
            os.close(fd)
            return False, f"resetting the high-water mark was refused ({exc.strerror or exc})"
        self._clear_refs_fd = fd
        # After a reset, getrusage must report about the current RSS. Where it does not, ru_maxrss is not the
        # resettable mark and we read VmHWM from /proc/self/status instead. The common cause: the kernel keeps the
        # high-water mark of the image a process replaced by exec, so a worker that a large process started
        # (vfork + exec, as subprocess does) reports the parent's size as its maxrss for ever.
        rss = self.rss_bytes()
        maxrss = _ru_maxrss()
        self._use_status_for_hwm = rss is None or maxrss is None or maxrss > rss + 8 * (1 << 20)
        return True, None

    def _close(self) -> None:
        for name in ("_statm_fd", "_clear_refs_fd", "_status_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            setattr(self, name, None)

    def reopen_after_fork(self) -> None:
        """Point the descriptors at this (child) process; registered with ``os.register_at_fork``."""
        self._lock = threading.Lock()
        self._psutil_process = None
        self._open()

    # -- readings ---------------------------------------------------------------------------------------------
    def rss_bytes(self) -> int | None:
        """Current resident set size, in bytes."""
        fd = self._statm_fd
        if fd is not None:
            try:
                fields = os.pread(fd, 128, 0).split()
                return int(fields[1]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                pass
        return self._psutil_rss()

    def rss_vms_bytes(self) -> tuple[int | None, int | None]:
        fd = self._statm_fd
        if fd is not None:
            try:
                fields = os.pread(fd, 128, 0).split()
                return int(fields[1]) * _PAGE_SIZE, int(fields[0]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                pass
        try:
            info = self._process().memory_info()
            return info.rss, info.vms
        except Exception:
            return None, None

    def _process(self):
        if self._psutil_process is None:
            import psutil

            self._psutil_process = psutil.Process()
        return self._psutil_process

    def _psutil_rss(self) -> int | None:
        try:
            return int(self._process().memory_info().rss)
        except Exception:
            return None

    def _status_hwm(self) -> int | None:
        """VmHWM from a kept-open ``/proc/self/status`` (~4 us with ``pread``, ~13 us opening and parsing lines)."""
        fd = self._status_fd
        if fd is None:
            try:
                fd = self._status_fd = os.open("/proc/self/status", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                return None
        try:
            data = os.pread(fd, 8192, 0)
            start = data.index(b"VmHWM:") + 6
            return int(data[start : data.index(b"kB", start)]) * 1024
        except (OSError, ValueError):
            return None

    def hwm_bytes(self) -> int | None:
        """The kernel's high-water mark of RSS since the last :meth:`reset_hwm` (or process start)."""
        if self._use_status_for_hwm and self.hwm_usable:
            return self._status_hwm()
        return _ru_maxrss()

    def rss_after_reset(self) -> int | None:
        """Current RSS, read right after :meth:`reset_hwm`: the fresh mark *is* the RSS then, and ``getrusage``
        (~1 us) is cheaper than parsing ``statm`` (~2 us). Where ``getrusage`` is not the resettable mark (see
        ``_open_clear_refs``), ``statm`` it is."""
        if not self._use_status_for_hwm:
            value = _ru_maxrss()
            if value is not None:
                return value
        return self.rss_bytes()

    def reset_hwm(self) -> bool:
        """Lower the high-water mark to the current RSS. Returns False when the kernel refused."""
        fd = self._clear_refs_fd
        if fd is None:
            return False
        try:
            os.write(fd, b"5")
            return True
        except OSError as exc:
            self.hwm_usable = False
            self.hwm_refusal = f"resetting the high-water mark failed ({exc.strerror or exc})"
            return False


_probe: ProcessProbe | None = None
_probe_lock = threading.Lock()


def get_probe() -> ProcessProbe:
    """The process-wide probe (created on first use, recreated in forked children)."""
    probe = _probe
    if probe is not None:
        return probe
    return _create_probe()


def _create_probe() -> ProcessProbe:
    global _probe
    probe = _probe
    if probe is None:
        with _probe_lock:
            if _probe is None:
                _probe = ProcessProbe()
            probe = _probe
    return probe


def _after_fork_in_child() -> None:
    if _probe is not None:
        _probe.reopen_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PeakSampler:
    """A background thread that samples a reading and hands each value to the registered listeners.

    Used when the kernel's mark cannot be reset, and to follow child processes (whose memory has no resettable
    mark we can read from here). One thread serves every listener; it stops when the last one leaves, so an idle
    process pays nothing.
    """

    def __init__(self, read: Callable[[], int | None], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s!r} s")
        self.read = read
        self.interval_s = interval_s
        self._listeners: dict[int, Callable[[int], None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_key = 0

    def add(self, listener: Callable[[int], None]) -> int:
        with self._lock:
            key = self._next_key
            self._next_key += 1
            self._listeners[key] = listener
            if self._thread is None or not self._thread.is_alive():
                # A fresh event per thread: an old thread told to stop must not be revived by a new start.
                self._wake = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._wake,), name="memguard-sampler", daemon=True
                )
                self._thread.start()
        return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._listeners.pop(key, None)
            if not self._listeners:
                self._wake.set()
                self._thread = None

    def sample_now(self) -> None:
        value = self._safe_read()
        if value is None:
            return
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener(value)

    def _safe_read(self) -> int | None:
        try:
            return self.read()
        except Exception:
            return None

    def _run(self, wake: threading.Event) -> None:
        while not wake.is_set():
            self.sample_now()
            wake.wait(self.interval_s)
