"""``memguard watch`` on real processes: a prefork worker, a process that grows, children that come and go."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import pytest

from pytest_memguard.cli.watch import LEAK_TICKS, Track, sparkline

from .conftest import REPO, cli_command, cli_env, run_cli, stop_process_tree

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
LINE_RE = re.compile(
    rf"^(?P<stamp>{STAMP}) tick=(?P<tick>\d+) pid=(?P<pid>\d+) role=(?P<role>main|child) rss=(?P<rss>[\d.]+)MB "
    r"tick_delta=(?P<tick_delta>[+-][\d.]+)MB start_delta=(?P<start_delta>[+-][\d.]+)MB "
    r"limit=(?P<limit>[\d.]+%|\?) state=(?P<state>\S+)$"
)

# Grows by 2 MB every 0.1 s (pages written, so resident) for a few seconds, then holds.
GROWER = """
import time
chunks = []
for _ in range(60):
    chunks.append(b"x" * (2 * 2**20))
    time.sleep(0.1)
time.sleep(30)
"""

# Once the file named by argv[1] exists, starts a child that grows like GROWER for 1.2 s and exits; then exits
# itself 0.5 s later (so a watch of its pid ends on its own).
PARENT = f"""
import os, subprocess, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
child = subprocess.Popen([sys.executable, "-c", {GROWER.replace("range(60)", "range(12)").replace("30", "0")!r}])
child.wait()
time.sleep(0.5)
"""


def parse_lines(stdout: str) -> tuple[list[dict], list[str]]:
    """(tick lines as dicts, the remaining lines)."""
    ticks, rest = [], []
    for line in stdout.splitlines():
        match = LINE_RE.match(line)
        if match:
            ticks.append(match.groupdict())
        elif line.strip():
            rest.append(line)
    return ticks, rest


@pytest.fixture
def python_process():
    """Start ``python -c CODE`` processes; all are stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(code: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process_tree(proc, timeout=2)


# -- not a terminal: one timestamped line per process per tick --------------------------------------------------


def test_once_prints_one_line_per_worker_process(celery_worker):
    result = run_cli("watch", "--once", "--pattern", celery_worker.name)
    assert result.returncode == 0, result.stderr
    ticks, rest = parse_lines(result.stdout)
    assert rest == []  # no summary after a single reading
    assert [(int(t["pid"]), t["role"]) for t in ticks] == [(celery_worker.main_pid, "main")] + [
        (pid, "child") for pid in celery_worker.child_pids
    ]
    assert {t["tick"] for t in ticks} == {"0"}
    assert all(float(t["rss"]) > 10 and t["state"] == "running" for t in ticks)
    assert all(t["tick_delta"] == "+0.0" and t["start_delta"] == "+0.0" for t in ticks)


def test_short_duration_run_prints_timestamped_ticks_and_a_summary(celery_worker):
    started = time.monotonic()
    result = run_cli("watch", "0.2", "--duration", "1", "--pattern", celery_worker.name)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 6
    ticks, rest = parse_lines(result.stdout)
    numbers = sorted({int(t["tick"]) for t in ticks})
    assert numbers == list(range(len(numbers))) and 5 <= len(numbers) <= 6  # 0, 0.2 … 1.0 s
    for n in numbers:
        assert len([t for t in ticks if int(t["tick"]) == n]) == 3
    stamps = sorted({t["stamp"] for t in ticks})
    assert len(stamps) == len(numbers)
    # Elapsed is to the end of the last tick (1.0 s plus its reading, more on a loaded machine).
    assert re.fullmatch(rf"memguard watch summary: {len(numbers)} ticks over 1\.\ds, 3 processes", rest[0])
    assert rest[1].split() == ["PID", "ROLE", "START", "END", "PEAK", "CHANGE", "NOTE"]
    summary_pids = [int(line.split()[0]) for line in rest[2:]]
    assert summary_pids == [celery_worker.main_pid, *celery_worker.child_pids]
    assert all(line.endswith("running") for line in rest[2:])


def watch_until_it_ends(*args: str, after_first_tick: Callable[[subprocess.Popen], object]) -> tuple[int, str, str]:
    """Run ``memguard watch ARGS`` (not on a terminal); once tick 0 is printed call ``after_first_tick(process)``,
    then wait (bounded) for the watch to end by itself. Returns (exit status, stdout, stderr)."""
    watch = subprocess.Popen(
        cli_command("watch", *args), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = watch.stdout.readline()
        after_first_tick(watch)
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(timeout=5)
    return watch.returncode, first + out, err


def test_growing_child_that_appears_and_exits_is_flagged_and_summarised(python_process, tmp_path):
    go = tmp_path / "go"
    parent = python_process(PARENT, str(go))
    # The child may appear only after tick 0; no --duration: the watch ends once the parent has exited.
    code, out, err = watch_until_it_ends("0.2", "--pid", str(parent.pid), after_first_tick=lambda _: go.touch())
    assert code == 0, err
    ticks, rest = parse_lines(out)
    assert (ticks[0]["tick"], ticks[0]["pid"], ticks[0]["role"]) == ("0", str(parent.pid), "main")
    child_rows = [t for t in ticks if t["role"] == "child"]
    assert child_rows, out
    child = child_rows[0]["pid"]
    states = [t["state"] for t in child_rows]
    assert states[0] == "new"
    assert states[-1] == "exited"
    assert f"leak?_+{LEAK_TICKS}_ticks" in states  # grew on 3 ticks in a row
    parent_rows = [t for t in ticks if t["pid"] == str(parent.pid)]
    assert {t["role"] for t in parent_rows} == {"main"}
    assert parent_rows[-1]["state"] == "exited"
    assert "exited at +" in next(line for line in rest if line.split()[0] == str(parent.pid))
    summary = next(line for line in rest if line.split()[0] == child)
    assert "appeared at +" in summary and "exited at +" in summary and "leak suspect: grew" in summary
    start, end, peak = (float(v.rstrip("MB")) for v in summary.split()[2:5])
    assert peak >= end > start + 4  # it grew by ≥ 2 MB per 0.1 s while watched


def test_sigint_ends_the_watch_with_a_summary(celery_worker):
    def interrupt(watch: subprocess.Popen) -> None:
        time.sleep(0.3)
        watch.send_signal(signal.SIGINT)

    code, out, err = watch_until_it_ends("0.2", "--pattern", celery_worker.name, after_first_tick=interrupt)
    assert code == 0, err
    assert "Traceback" not in err
    assert LINE_RE.match(out.splitlines()[0])
    assert "memguard watch summary:" in out
    assert str(celery_worker.main_pid) in out.split("memguard watch summary:")[1]


def test_sigterm_ends_the_watch_with_a_summary_too(python_process):
    target = python_process("import time; time.sleep(30)")
    code, out, _ = watch_until_it_ends("0.2", "--pid", str(target.pid), after_first_tick=subprocess.Popen.terminate)
    assert code == 0
    assert "memguard watch summary:" in out


def test_watching_pids_ends_when_they_have_all_exited(python_process, tmp_path):
    go = tmp_path / "go"
    target = python_process("import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)", str(go))
    # The target exits after tick 0; no --duration: the watch must end by itself.
    code, out, _ = watch_until_it_ends("0.2", "--pid", str(target.pid), after_first_tick=lambda _: go.touch())
    assert code == 0
    ticks, rest = parse_lines(out)
    assert ticks[0]["state"] == "running"
    assert ticks[-1]["state"] == "exited"
    assert "exited at +" in rest[-1]


def test_nothing_matching_is_said_each_tick():
    result = run_cli("watch", "--once", "--pattern", "memguard-nothing-matches-this-xyz")
    assert result.returncode == 0
    assert re.match(rf"^{STAMP} tick=0 no processes match 'memguard-nothing-matches-this-xyz'$", result.stdout.strip())


# -- a terminal: the rich table ----------------------------------------------------------------------------------


def run_in_terminal(args: list[str], timeout: float = 20.0) -> str:
    """Run ``memguard ARGS`` with its stdout on a pseudo-terminal of 120×40 and return everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = cli_env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cli_command(*args), cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_terminal_shows_the_live_table_with_a_highlighted_leak_suspect(python_process):
    grower = python_process(GROWER)
    screen = run_in_terminal(["watch", "0.2", "--duration", "1.2", "--pid", str(grower.pid)])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "memguard watch · pid" in plain
    for column in ("PID", "ROLE", "RSS", "Δ TICK", "Δ START", "% LIMIT", "TREND", "STATE"):
        assert column in plain
    assert "┃" in plain or "│" in plain  # a drawn table, not log lines
    assert str(grower.pid) in plain
    assert f"leak? +{LEAK_TICKS} ticks" in plain
    assert any(c in plain for c in "▂▃▄▅▆▇█")  # the trend climbs
    assert "\x1b[1;31m" in screen  # the suspect row is bold red
    assert screen.count("\x1b[2K") >= 5  # the table was erased and redrawn in place, tick after tick
    assert "memguard watch summary:" in plain
    assert "leak suspect: grew" in plain
    assert not LINE_RE.search(plain)  # no log lines on a terminal


# -- pieces ------------------------------------------------------------------------------------------------------


def test_sparkline_scales_between_the_window_min_and_max():
    assert sparkline([]) == ""
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"


def test_track_streak_counts_only_consecutive_growth():
    track = Track(pid=1, role="main", main_pid=1, first_rss=100, first_seen=0.0, appeared_late=False)
    for rss in (110, 120, 130):
        track.update(rss)
    assert track.streak == 3 and track.leak_suspect
    track.update(130)  # flat: the streak ends
    assert track.streak == 0 and not track.leak_suspect and track.max_streak == 3
    assert (track.peak_rss, track.start_delta, track.tick_delta) == (130, 30, 0)
