"""``memguard watch``: follow the RSS of worker processes live, and flag the ones that keep growing.

Replaces the seed's ``monitor_worker_memory.sh`` (a ``docker stats`` loop): the processes come from their command
lines (``--pattern``, default: Celery workers) or from ``--pid``, each with all its descendants (a prefork pool's
children), read through psutil every INTERVAL seconds (default 5, as the seed's script).

Why two outputs: on a terminal a person wants one table that updates in place (rich), with the change since the
last tick and since start, a small trend line, and a highlighted row when a process grew on each of the last
:data:`LEAK_TICKS` ticks — the pattern of a leak. In a log file or a pipe, a refreshing table is noise: there it
prints one timestamped ``key=value`` line per process per tick, which ``grep`` and log shippers read.

Ctrl-C (SIGINT), SIGTERM or the end of ``--duration`` prints a summary per process: start, end and peak RSS
(the peak of the samples: a spike shorter than the interval is not seen), and whether it exited.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from ..runtime.cgroup import effective_limit_bytes
from ..runtime.system import percent_of
from ..runtime.units import MB, format_mb
from .usage import EXIT_OK, UsageError, compiled_regex, positive_int, positive_seconds
from .workers import DEFAULT_PATTERN, find_processes

DEFAULT_INTERVAL_S = 5.0
LEAK_TICKS = 3  # a process that grew on this many consecutive ticks is a leak suspect
TREND_POINTS = 20
_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[int | float]) -> str:
    """A trend in block characters, scaled between the window's own minimum and maximum."""
    points = list(values)
    if not points:
        return ""
    low, high = min(points), max(points)
    if high == low:
        return _SPARK[0] * len(points)
    span = high - low
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - low) / span * len(_SPARK)))] for v in points)


@dataclass
class Track:
    """One process followed across ticks, keyed by (pid, start time) so a reused pid is a new process."""

    pid: int
    role: str
    main_pid: int
    first_rss: int
    first_seen: float  # wall-clock time
    appeared_late: bool  # not there at the first tick
    last_rss: int = 0
    prev_rss: int = 0
    peak_rss: int = 0
    streak: int = 0  # consecutive ticks with RSS above the previous tick's
    max_streak: int = 0
    alive: bool = True
    gone_at: float | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=TREND_POINTS))

    def __post_init__(self) -> None:
        self.last_rss = self.prev_rss = self.peak_rss = self.first_rss
        self.history.append(self.first_rss)

    def update(self, rss: int) -> None:
        self.prev_rss, self.last_rss = self.last_rss, rss
        self.peak_rss = max(self.peak_rss, rss)
        self.streak = self.streak + 1 if rss > self.prev_rss else 0
        self.max_streak = max(self.max_streak, self.streak)
        self.history.append(rss)

    @property
    def leak_suspect(self) -> bool:
        return self.alive and self.streak >= LEAK_TICKS

    @property
    def tick_delta(self) -> int:
        return self.last_rss - self.prev_rss

    @property
    def start_delta(self) -> int:
        return self.last_rss - self.first_rss


@dataclass
class Tick:
    number: int  # 0-based
    time: float  # wall clock
    rows: list[Track]  # alive processes, then those that exited since the last tick
    new: set[int]  # pids that appeared this tick (after the first)
    gone: set[int]  # pids that exited since the last tick


class Watcher:
    """The state of a watch: which processes, their history. Reading is separate from showing it."""

    def __init__(self, pattern: re.Pattern[str] | None, pids: list[int], limit_bytes: int | None) -> None:
        self.pattern = pattern
        self.pids = pids
        self.limit_bytes = limit_bytes
        self.tracks: dict[tuple[int, float], Track] = {}
        self.ticks = 0
        self.started = time.time()

    def tick(self) -> Tick:
        now = time.time()
        seen: set[tuple[int, float]] = set()
        new: set[int] = set()
        for item in find_processes(self.pattern, self.pids):
            proc = item.process
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
                        continue
                    key = (proc.pid, proc.create_time())
                    rss = int(proc.memory_info().rss)
            except psutil.Error:  # exited between listing and reading
                continue
            seen.add(key)
            track = self.tracks.get(key)
            if track is None:
                self.tracks[key] = Track(
                    pid=proc.pid,
                    role=item.role,
                    main_pid=item.main_pid,
                    first_rss=rss,
                    first_seen=now,
                    appeared_late=self.ticks > 0,
                )
                if self.ticks > 0:
                    new.add(proc.pid)
            else:
                track.update(rss)
        gone_tracks = [t for k, t in self.tracks.items() if t.alive and k not in seen]
        for track in gone_tracks:
            track.alive = False
            track.gone_at = now
        alive = sorted((t for t in self.tracks.values() if t.alive), key=_order)
        tick = Tick(self.ticks, now, alive + sorted(gone_tracks, key=_order), new, {t.pid for t in gone_tracks})
        self.ticks += 1
        return tick

    @property
    def everything_exited(self) -> bool:
        return not any(t.alive for t in self.tracks.values())

    def percent(self, rss: int) -> float | None:
        return percent_of(rss, self.limit_bytes)


def _order(track: Track) -> tuple[int, int, int]:
    return (track.main_pid, 0 if track.role == "main" else 1, track.pid)


def _state(track: Track, tick: Tick) -> str:
    if track.pid in tick.gone:
        return "exited"
    if track.pid in tick.new:
        return "new"
    if track.leak_suspect:
        return f"leak? +{track.streak} ticks"
    return "running"


def _mb(n_bytes: int, *, signed: bool = False) -> str:
    return format_mb(n_bytes / MB, signed=signed)


# -- plain output (not a terminal) ------------------------------------------------------------------------------


class LinePrinter:
    """One timestamped ``key=value`` line per process per tick: greppable, one event per line."""

    def __init__(self, watcher: Watcher, what: str, out=None) -> None:
        self.watcher = watcher
        self.what = what
        self.out = out or sys.stdout

    def show(self, tick: Tick) -> None:
        stamp = datetime.fromtimestamp(tick.time).astimezone().isoformat(timespec="milliseconds")
        if not tick.rows:
            print(f"{stamp} tick={tick.number} no processes match {self.what}", file=self.out, flush=True)
            return
        for t in tick.rows:
            percent = self.watcher.percent(t.last_rss)
            print(
                f"{stamp} tick={tick.number} pid={t.pid} role={t.role} rss={_mb(t.last_rss)} "
                f"tick_delta={_mb(t.tick_delta, signed=True)} start_delta={_mb(t.start_delta, signed=True)} "
                f"limit={'?' if percent is None else f'{percent:.1f}%'} state={_state(t, tick).replace(' ', '_')}",
                file=self.out,
                flush=True,
            )

    def close(self) -> None:
        pass

    def summary(self, lines: list[str]) -> None:
        print("\n".join(lines), file=self.out, flush=True)


# -- live table (a terminal) ------------------------------------------------------------------------------------


class LiveTable:
    """A rich table redrawn in place each tick; leak suspects in bold red, new rows green, exited rows dim."""

    def __init__(self, watcher: Watcher, what: str, interval_s: float) -> None:
        from rich.console import Console
        from rich.live import Live

        self.watcher = watcher
        self.what = what
        self.interval_s = interval_s
        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def _table(self, tick: Tick):
        from rich.table import Table

        stamp = datetime.fromtimestamp(tick.time).strftime("%H:%M:%S")
        table = Table(
            title=f"memguard watch · {self.what} · every {self.interval_s:g}s · tick {tick.number} · {stamp}",
            caption=f"highlighted: grew on each of the last {LEAK_TICKS}+ ticks (leak suspect) · Ctrl-C to stop",
        )
        for name, justify in (
            ("PID", "right"),
            ("ROLE", "left"),
            ("RSS", "right"),
            ("Δ TICK", "right"),
            ("Δ START", "right"),
            ("% LIMIT", "right"),
            ("TREND", "left"),
            ("STATE", "left"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)
        for t in tick.rows:
            state = _state(t, tick)
            style = (
                "dim" if state == "exited" else "green" if state == "new" else "bold red" if t.leak_suspect else None
            )
            percent = self.watcher.percent(t.last_rss)
            table.add_row(
                str(t.pid) if t.role == "main" else f"└ {t.pid}",
                t.role,
                _mb(t.last_rss),
                _mb(t.tick_delta, signed=True),
                _mb(t.start_delta, signed=True),
                "?" if percent is None else f"{percent:.1f}%",
                sparkline(t.history),
                state,
                style=style,
            )
        if not tick.rows:
            table.add_row("", "", "", "", "", "", "", f"no processes match {self.what}")
        return table

    def show(self, tick: Tick) -> None:
        self.live.update(self._table(tick), refresh=True)

    def close(self) -> None:
        self.live.stop()

    def summary(self, lines: list[str]) -> None:
        self.console.print("\n".join(lines), highlight=False, markup=False)


# -- the loop ----------------------------------------------------------------------------------------------------


def summary_lines(watcher: Watcher, elapsed_s: float) -> list[str]:
    """Start, end and peak per process (peak of the samples), with what became of it."""
    tracks = sorted(watcher.tracks.values(), key=_order)
    lines = [f"memguard watch summary: {watcher.ticks} ticks over {elapsed_s:.1f}s, {len(tracks)} processes"]
    if not tracks:
        return lines
    lines.append(f"{'PID':>8}  {'ROLE':<6}{'START':>10}{'END':>10}{'PEAK':>10}{'CHANGE':>10}  NOTE")
    for t in tracks:
        notes = []
        if t.appeared_late:
            notes.append(f"appeared at +{t.first_seen - watcher.started:.1f}s")
        notes.append("running" if t.alive else f"exited at +{(t.gone_at or 0) - watcher.started:.1f}s")
        if t.max_streak >= LEAK_TICKS:
            notes.append(f"leak suspect: grew {t.max_streak} ticks in a row")
        lines.append(
            f"{t.pid:>8}  {t.role:<6}{_mb(t.first_rss):>10}{_mb(t.last_rss):>10}{_mb(t.peak_rss):>10}"
            f"{_mb(t.start_delta, signed=True):>10}  {'; '.join(notes)}"
        )
    return lines


def watch(
    watcher: Watcher,
    display: LinePrinter | LiveTable,
    *,
    interval_s: float,
    once: bool = False,
    duration_s: float | None = None,
) -> None:
    """Tick on a fixed schedule (no drift from slow reads) until --once, --duration, Ctrl-C or, when watching
    explicit pids, until every one of them has exited."""
    start = time.monotonic()
    n = 0
    try:
        while True:
            display.show(watcher.tick())
            if once or (watcher.pids and watcher.everything_exited):
                break
            n += 1
            now = time.monotonic()
            if start + n * interval_s < now:  # a tick overran: skip the slots it covered instead of bunching up
                n = int((now - start) / interval_s) + 1
            next_at = start + n * interval_s
            if duration_s is not None and next_at - start > duration_s + 1e-9:
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        display.close()
    if not once:
        display.summary(summary_lines(watcher, time.monotonic() - start))


def _raise_interrupt(signum, frame):  # SIGTERM ends a watch as Ctrl-C does: with the summary
    raise KeyboardInterrupt


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "watch",
        help="live RSS of worker processes and their children, with leak suspects highlighted",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "interval",
        metavar="INTERVAL",
        nargs="?",
        default=DEFAULT_INTERVAL_S,
        type=positive_seconds,
        help=f"seconds between readings (default {DEFAULT_INTERVAL_S:g})",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--pattern",
        metavar="P",
        type=compiled_regex,
        help=f"regular expression matched against command lines (default {DEFAULT_PATTERN!r})",
    )
    target.add_argument(
        "--pid",
        metavar="N",
        type=positive_int,
        action="append",
        default=[],
        help="watch this pid (repeatable)",
    )
    parser.add_argument("--once", action="store_true", help="take one reading and exit")
    parser.add_argument("--duration", metavar="S", type=positive_seconds, help="stop after S seconds")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    missing = [pid for pid in args.pid if not psutil.pid_exists(pid)]
    if missing:
        raise UsageError(f"--pid {missing[0]}: no such process; list candidates with 'memguard report'")
    pattern = None if args.pid else (args.pattern or re.compile(DEFAULT_PATTERN))
    what = f"pid {', '.join(map(str, args.pid))}" if args.pid else f"{pattern.pattern!r}"
    watcher = Watcher(pattern, args.pid, effective_limit_bytes())
    display = None
    if sys.stdout.isatty():
        try:
            display = LiveTable(watcher, what, args.interval)
        except ImportError:
            print(
                "memguard watch: rich is not installed (pip install 'pytest-memguard[cli]'); printing lines",
                file=sys.stderr,
            )
    if display is None:
        display = LinePrinter(watcher, what)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (main() called from a thread): leave SIGTERM alone
        previous = None
    try:
        watch(watcher, display, interval_s=args.interval, once=args.once, duration_s=args.duration)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
