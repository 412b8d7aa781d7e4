"""Baseline files on disk: atomic, lock-protected, never clobbering what is not ours.

The tiny interface (``load`` / ``save`` / ``merge``) is :class:`FileStorage`; the module functions are shortcuts
for it. Another backend (a CI artifact store, a database) implements the same three methods.

Why each rule:

* *Atomic*: a save writes a temporary file in the same directory, fsyncs it and ``os.replace``-s it over the
  target, so a reader (or a killed run) sees the old file or the new one, never half of one.
* *Locked read-merge-write*: under ``pytest -n 2`` every worker (or the controller) merges its entries into one
  file. ``fcntl.flock`` on a sidecar ``<file>.lock`` serialises them; without it two writers read the same old
  file and the second ``os.replace`` drops the first one's entries. The sidecar, not the file itself, is locked
  because ``os.replace`` swaps the inode a lock on the file would sit on.
* *Never overwrite a corrupt or foreign file*: it may be a colleague's data or a misnamed path; the merge raises
  :class:`BaselineError` naming it instead, and the user decides.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import BaselineError
from .format import Baseline, Entry, baseline_from_dict, coerce_entries
from .machine import commit_info, machine_info

DEFAULT_BASELINE_PATH = os.path.join(".memguard", "baseline.json")

try:  # POSIX only; elsewhere concurrent merges are not protected (documented, the plugin targets Linux)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (created as needed) for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise BaselineError(
            f"{lock_path}: cannot create the lock file ({exc.strerror}); is the folder writable?"
        ) from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(path: Path) -> Baseline | None:
    """The baseline at ``path``; ``None`` when no file is there. Anything unreadable raises BaselineError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise BaselineError(
            f"{path}: is a directory; give --memory-baseline a file path such as {DEFAULT_BASELINE_PATH}"
        ) from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BaselineError(
            f"{path}: not a memguard baseline (not UTF-8 text); point at another path or delete it"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: corrupt baseline (invalid JSON at line {exc.lineno} column {exc.colno}); "
            "it was left untouched: delete it or save to another path"
        ) from None
    return baseline_from_dict(data, str(path))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not possible on every filesystem
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _dump(baseline: Baseline) -> str:
    return json.dumps(baseline.to_dict(), indent=2, sort_keys=False) + "\n"


class FileStorage:
    """A baseline kept in one JSON file (see :mod:`.format`). Safe for concurrent writers on one host."""

    def __init__(self, path: str | os.PathLike = DEFAULT_BASELINE_PATH) -> None:
        self.path = Path(path)

    def load(self) -> Baseline:
        """Read the baseline; a missing file is an error here (comparing against nothing is a mistake)."""
        baseline = _read(self.path)
        if baseline is None:
            raise BaselineError(
                f"{self.path}: no baseline file; create it with --memory-baseline-save (or check the path)"
            )
        return baseline

    def save(
        self,
        entries: Mapping[str, Entry | Mapping],
        *,
        machine: Mapping | None = None,
        commit: Mapping | None | bool = True,
    ) -> Baseline:
        """Replace the baseline with exactly ``entries``. An existing corrupt or foreign file is not replaced.

        ``commit=True`` asks git; pass a dict to set it, or ``None`` to record none.
        """
        baseline = Baseline(
            entries=coerce_entries(entries, str(self.path)),
            machine=dict(machine) if machine is not None else machine_info(),
            commit=_commit(commit, self.path),
            created_at=_now(),
            source=str(self.path),
        )
        with _locked(self.path):
            _read(self.path)  # raises for a corrupt/foreign file: it must not be overwritten
            _write_atomic(self.path, _dump(baseline))
        return baseline

    def merge(
        self,
        entries: Mapping[str, Entry | Mapping],
        *,
        machine: Mapping | None = None,
        commit: Mapping | None | bool = True,
    ) -> Baseline:
        """Add or replace ``entries`` in the file, keeping every other entry (locked read-merge-write).

        For xdist: each worker (or the controller) calls this with its own entries; no entry is lost whatever the
        interleaving. The file's machine/commit are this call's (the newest run describes the file).
        """
        new = coerce_entries(entries, str(self.path))
        with _locked(self.path):
            current = _read(self.path)
            merged = dict(current.entries) if current is not None else {}
            merged.update(new)
            if machine is None:
                machine = current.machine if current is not None and current.machine else machine_info()
            baseline = Baseline(
                entries=merged,
                machine=dict(machine),
                commit=_commit(commit, self.path),
                created_at=_now(),
                source=str(self.path),
            )
            _write_atomic(self.path, _dump(baseline))
        return baseline


def _commit(commit: Mapping | None | bool, path: Path) -> dict | None:
    if commit is True:
        return commit_info(path.parent if path.parent.is_dir() else None)
    if commit is False or commit is None:
        return None
    return dict(commit)


def load_baseline(path: str | os.PathLike) -> Baseline:
    """Read the baseline at ``path``; :class:`BaselineError` (one line naming the file) when missing or unusable."""
    return FileStorage(path).load()


def save_baseline(
    path: str | os.PathLike,
    entries: Mapping[str, Entry | Mapping],
    *,
    machine: Mapping | None = None,
    commit: Mapping | None | bool = True,
) -> Baseline:
    """Write ``entries`` as the whole baseline at ``path`` (atomic; refuses to replace a corrupt/foreign file)."""
    return FileStorage(path).save(entries, machine=machine, commit=commit)


def merge_into_baseline(
    path: str | os.PathLike,
    entries: Mapping[str, Entry | Mapping],
    *,
    machine: Mapping | None = None,
    commit: Mapping | None | bool = True,
) -> Baseline:
    """Merge ``entries`` into the baseline at ``path`` under a lock (xdist workers, controller)."""
    return FileStorage(path).merge(entries, machine=machine, commit=commit)


__all__ = [
    "DEFAULT_BASELINE_PATH",
    "FileStorage",
    "load_baseline",
    "merge_into_baseline",
    "save_baseline",
]
