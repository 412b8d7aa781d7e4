"""``memguard html RESULTS.json -o report.html``: a picture of a test session's memory.

Why a picture: people look at a bar chart before they read a table. The page shows, per test, its peak and its
delta as bars against its budget (a dashed marker; over-budget bars are red), then for each Celery task record a
timeline of RSS across its checkpoints with the task's kernel peak as a dashed line — the peak a checkpoint
timeline cannot show. Tables with the same numbers follow each chart, so the page also reads without the pictures.

The page is self-contained: inline CSS and SVG, no script and no network asset, so it opens from a CI artifact
store or an e-mail attachment and renders the same everywhere.

Input, as written by the plugin's ``--memguard-json`` (all sizes MB = 2**20 bytes; ``null`` or absent = unknown)::

    {"version": 1,
     "tests": [{"nodeid": str,
                "peak_mb": number,    # peak RSS above the test's start
                "delta_mb": number,   # RSS at the end minus at the start
                "rss_mb": number,     # absolute peak RSS
                "budget": {"peak_mb"?: number, "delta_mb"?: number, "rss_mb"?: number},
                "outcome": str,       # passed, failed, skipped, error
                "tasks": [TASK, ...]}],
     "tasks": [TASK, ...]}

    TASK = {"task_id", "task_name", "state", "peak_mb", "delta_mb", "peak_delta_mb", "start_mb", "finish_mb",
            "duration_s", "checkpoints": [{"label": str, "time_s": number, "rss_mb": number}, ...]}

or a baseline ``{"version": 1, "kind": "memguard-baseline", "entries": {NAME: {"peak_mb", "delta_mb",
"rss_mb"}}}`` (bars without budgets). :mod:`pytest_memguard.cli.results` reads and validates both; a malformed
file is a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime
from html import escape

from .results import BASELINE_KIND, Results, ResultsError, TaskRecord, TestResult, load_results
from .usage import EXIT_OK, UsageError

DEFAULT_OUTPUT = "report.html"

# Colours chosen to stay apart for the common colour-vision deficiencies (blue/orange), red only for "over".
PEAK_COLOUR = "#2563eb"
DELTA_COLOUR = "#f59e0b"
OVER_COLOUR = "#dc2626"
BUDGET_COLOUR = "#111827"
LINE_COLOUR = "#2563eb"

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; margin: 0;
       background: #f9fafb; }
main { max-width: 1040px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; }
h3 { font-size: 15px; margin: 0 0 6px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.muted { color: #6b7280; } .over { color: #dc2626; font-weight: 600; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 14px; min-width: 140px; }
.card b { display: block; font-size: 20px; }
.panel { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 16px; margin: 12px 0; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #374151; }
svg .label { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 11.5px; fill: #111827; }
svg .value { font-size: 11.5px; fill: #111827; } svg .axis { fill: #6b7280; font-size: 11px; }
svg text.over { fill: #dc2626; font-weight: 600; } svg text.peak { fill: #dc2626; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin-top: 8px; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #f3f4f6; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; word-break: break-all; }
th { color: #6b7280; font-weight: 600; border-bottom: 1px solid #e5e7eb; }
td.name { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.legend span { display: inline-block; margin-right: 16px; } .swatch { display: inline-block; width: 12px;
  height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
"""


def fmt(value: float | None) -> str:
    """One decimal, as the log lines print MB; unknown as an en dash."""
    return "–" if value is None else f"{value:.1f}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round axis ticks (1, 2, 5 × 10^k) from at or below ``low`` to at or above ``high``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step) * step, math.ceil(high / step) * step
    return [round(first + i * step, 10) for i in range(round((last - first) / step) + 1)]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


# -- the bar chart ------------------------------------------------------------------------------------------------

_WIDTH = 880  # the SVGs scale to the page width (width 100%); this is their drawing size
_BAR_LEFT = 290  # label column
_BAR_WIDTH = 400  # then room on the right for "peak 212.4 MB / budget 150.0 MB"
_ROW = 40


def _svg_open(kind: str, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{kind}" width="100%" viewBox="0 0 {_WIDTH} {height}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(label)}">'
    )


def bar_chart(tests: list[TestResult]) -> str:
    """Horizontal bars: per test a peak bar and a delta bar, each with its budget as a dashed marker."""
    values = [0.0]
    for t in tests:
        values += [v for v in (t.peak_mb, t.delta_mb, t.budget.peak_mb, t.budget.delta_mb) if v is not None]
    ticks = nice_ticks(min(values), max(values))
    # The scale starts just below the most negative value (not at a round tick far below it).
    low, high = min(values) * 1.08, ticks[-1]
    ticks = [t for t in ticks if t >= low]

    def x(value: float) -> float:
        return _BAR_LEFT + (value - low) / (high - low) * _BAR_WIDTH

    top = 24
    height = top + _ROW * len(tests) + 28
    parts = [_svg_open("bars", height, "peak and delta per test against budget")]
    axis_y = top + _ROW * len(tests)
    for tick in ticks:
        tx = x(tick)
        stroke = "#9ca3af" if tick == 0 else "#e5e7eb"  # the zero line stands out: deltas can be negative
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="{stroke}"/>'
            f'<text class="axis" x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(f'<text class="axis" x="{_BAR_LEFT + _BAR_WIDTH}" y="{axis_y + 16}" dx="28">MB</text>')
    zero = x(0.0)
    for i, test in enumerate(tests):
        y = top + i * _ROW
        over = set(test.budget.over(test))
        name = escape(test.nodeid)
        parts.append(
            f'<g class="test" data-nodeid="{name}"><title>{name}</title>'
            f'<text class="label{" over" if over else ""}" x="{_BAR_LEFT - 10}" y="{y + 20}" text-anchor="end">'
            f"{escape(_truncate(test.nodeid, 40))}</text>"
        )
        for kind, value, budget, offset, colour in (
            ("peak", test.peak_mb, test.budget.peak_mb, 4, PEAK_COLOUR),
            ("delta", test.delta_mb, test.budget.delta_mb, 20, DELTA_COLOUR),
        ):
            if value is None:
                continue
            is_over = f"{kind}_mb" in over
            x0, x1 = sorted((zero, x(value)))
            fill = OVER_COLOUR if is_over else colour
            label = f"{kind} {fmt(value)} MB" + (f" / budget {fmt(budget)} MB" if budget is not None else "")
            parts.append(
                f'<rect class="bar {kind}{" over" if is_over else ""}" data-value="{value!r}" x="{x0:.1f}" '
                f'y="{y + offset}" width="{max(x1 - x0, 1.0):.1f}" height="13" rx="2" fill="{fill}">'
                f"<title>{name}: {label}</title></rect>"
            )
            if budget is not None:
                bx = x(budget)
                parts.append(
                    f'<line class="budget {kind}" data-value="{budget!r}" x1="{bx:.1f}" y1="{y + offset - 3}" '
                    f'x2="{bx:.1f}" y2="{y + offset + 16}" stroke="{BUDGET_COLOUR}" stroke-width="2" '
                    f'stroke-dasharray="3 2"><title>{kind} budget {fmt(budget)} MB</title></line>'
                )
            text_x = max(x1, x(budget) if budget is not None else x1) + 6
            parts.append(
                f'<text class="value{" over" if is_over else ""}" x="{text_x:.1f}" y="{y + offset + 11}">'
                f"{escape(label)}</text>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


# -- the task timelines --------------------------------------------------------------------------------------------


def _task_points(task: TaskRecord) -> list[tuple[float, float, str]]:
    points = [(c.time_s, c.rss_mb, c.label) for c in task.checkpoints]
    if not points and task.start_mb is not None:  # no checkpoints recorded: start and finish are still a line
        points.append((0.0, task.start_mb, "start"))
        if task.finish_mb is not None:
            points.append((task.duration_s or 0.0, task.finish_mb, "finish"))
    return points


def timeline(task: TaskRecord) -> str:
    """RSS across the task's checkpoints, with its peak as a dashed line (a spike between checkpoints)."""
    points = _task_points(task)
    if not points:
        return '<p class="muted">no checkpoints recorded</p>'
    width, height = _WIDTH, 230
    left, right, top, bottom = 60, 40, 30, 40
    xs = [p[0] for p in points] + [task.duration_s or 0.0]
    ys = [p[1] for p in points] + [v for v in (task.peak_mb, task.start_mb, task.finish_mb) if v is not None]
    x_ticks = nice_ticks(0.0, max(max(xs), 1e-3), 6)
    pad = max((max(ys) - min(ys)) * 0.1, 0.5)
    y_ticks = nice_ticks(min(ys) - pad, max(ys) + pad, 4)

    def sx(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (width - left - right)

    def sy(v: float) -> float:
        return top + (y_ticks[-1] - v) / (y_ticks[-1] - y_ticks[0]) * (height - top - bottom)

    parts = [_svg_open("timeline", height, f"RSS across checkpoints of {task.task_name}")]
    for t in y_ticks:
        parts.append(
            f'<line x1="{left}" y1="{sy(t):.1f}" x2="{width - right}" y2="{sy(t):.1f}" stroke="#eef0f3"/>'
            f'<text class="axis" x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>'
        )
    for t in x_ticks:
        parts.append(
            f'<text class="axis" x="{sx(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:g}s</text>'
        )
    parts.append(f'<text class="axis" x="{left - 6}" y="{top - 12}" text-anchor="end">MB</text>')
    if task.peak_mb is not None:
        py = sy(task.peak_mb)
        parts.append(
            f'<line class="peak" data-value="{task.peak_mb!r}" x1="{left}" y1="{py:.1f}" x2="{width - right}" '
            f'y2="{py:.1f}" stroke="{OVER_COLOUR}" stroke-dasharray="5 4"/>'
            f'<text class="value peak" x="{width - right}" y="{py - 5:.1f}" text-anchor="end">'
            f"peak {fmt(task.peak_mb)} MB</text>"
        )
    path = " ".join(f"{sx(px):.1f},{sy(py):.1f}" for px, py, _ in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE_COLOUR}" stroke-width="2"/>')
    for i, (px, py, label) in enumerate(points):
        cx, cy = sx(px), sy(py)
        dy = -10 if i % 2 == 0 else 18  # alternate above/below so neighbouring labels do not collide
        anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
        parts.append(
            f'<circle class="checkpoint" data-label="{escape(label)}" data-time="{px!r}" data-value="{py!r}" '
            f'cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#fff" stroke="{LINE_COLOUR}" stroke-width="2">'
            f"<title>{escape(label)}: {fmt(py)} MB at {px:g}s</title></circle>"
            f'<text class="value" x="{cx:.1f}" y="{cy + dy:.1f}" text-anchor="{anchor}">'
            f"{escape(label)} {fmt(py)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# -- the page ------------------------------------------------------------------------------------------------------


def _tests_table(tests: list[TestResult], baseline: bool) -> str:
    head = "<tr><th>test</th><th>peak MB</th><th>delta MB</th><th>RSS MB</th>"
    head += "</tr>" if baseline else "<th>budget peak / delta / RSS</th><th>outcome</th></tr>"
    rows = []
    for t in tests:
        over = set(t.budget.over(t))

        def cell(name: str, value: float | None, over: set[str] = over) -> str:
            cls = ' class="over"' if name in over else ""
            return f"<td{cls}>{fmt(value)}</td>"

        row = f'<tr><td class="name">{escape(t.nodeid)}</td>'
        row += cell("peak_mb", t.peak_mb) + cell("delta_mb", t.delta_mb) + cell("rss_mb", t.rss_mb)
        if not baseline:
            b = t.budget
            row += f"<td>{fmt(b.peak_mb)} / {fmt(b.delta_mb)} / {fmt(b.rss_mb)}</td>"
            verdict = f' <span class="over">over {", ".join(n[:-3] for n in sorted(over))}</span>' if over else ""
            row += f"<td>{escape(t.outcome or '–')}{verdict}</td>"
        rows.append(row + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _task_panel(task: TaskRecord, nodeid: str | None) -> str:
    facts = [
        ("state", escape(task.state or "–")),
        ("start", f"{fmt(task.start_mb)} MB"),
        ("finish", f"{fmt(task.finish_mb)} MB"),
        ("delta", f"{fmt(task.delta_mb)} MB"),
        ("peak", f"{fmt(task.peak_mb)} MB (+{fmt(task.peak_delta_mb)} above start)"),
        ("duration", "–" if task.duration_s is None else f"{task.duration_s:.3g} s"),
    ]
    facts_html = " · ".join(f'<span class="muted">{k}</span> {v}' for k, v in facts)
    made_by = f'<div class="muted">in {escape(nodeid)}</div>' if nodeid else ""
    task_id = f' <span class="muted">{escape(task.task_id)}</span>' if task.task_id else ""
    return (
        f'<div class="panel task" data-task-id="{escape(task.task_id or "")}">'
        f"<h3>{escape(task.task_name)}{task_id}</h3>{made_by}<div>{facts_html}</div>{timeline(task)}</div>"
    )


def render_html(results: Results, *, title: str | None = None) -> str:
    """The whole page as one string."""
    baseline = results.kind == BASELINE_KIND
    tests = sorted(results.tests, key=lambda t: -(t.peak_mb if t.peak_mb is not None else -math.inf))
    tasks = results.all_tasks()
    over = [t for t in tests if t.budget.over(t)]
    peak = max((t.peak_mb for t in tests if t.peak_mb is not None), default=None)
    title = title or f"memguard · {os.path.basename(results.source)}"
    cards = [
        ("tests" if not baseline else "entries", str(len(tests))),
        ("over budget", str(len(over))),
        ("largest peak", "–" if peak is None else f"{fmt(peak)} MB"),
        ("Celery tasks", str(len(tasks))),
    ]
    cards_html = "".join(f'<div class="card"><span class="muted">{k}</span><b>{v}</b></div>' for k, v in cards)
    legend = (
        f'<div class="legend"><span><i class="swatch" style="background:{PEAK_COLOUR}"></i>peak above start</span>'
        f'<span><i class="swatch" style="background:{DELTA_COLOUR}"></i>delta (end − start)</span>'
        f'<span><i class="swatch" style="background:{OVER_COLOUR}"></i>over budget</span>'
        f"<span>┆ budget</span></div>"
    )
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<div class="muted">{escape(results.source)} · {"baseline" if baseline else "test session"} · '
        f"rendered {datetime.now().strftime('%Y-%m-%d %H:%M')} · MB = 2<sup>20</sup> bytes</div>",
        f'<div class="cards">{cards_html}</div>',
    ]
    if tests:
        body += [
            "<h2>Peak and delta per test</h2>",
            f'<div class="panel">{legend}{bar_chart(tests)}{_tests_table(tests, baseline)}</div>',
        ]
    if tasks:
        body.append("<h2>Celery tasks: RSS across checkpoints</h2>")
        body += [_task_panel(task, nodeid) for task, nodeid in tasks]
    if not tests and not tasks:
        body.append('<p class="muted">The file holds no tests and no task records.</p>')
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "html",
        help="a self-contained HTML page with bar charts and task timelines from a results or baseline file",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("results", metavar="RESULTS.json", help="from --memguard-json, or a baseline ('-' = stdin)")
    parser.add_argument("-o", "--output", metavar="FILE", default=DEFAULT_OUTPUT, help=f"default {DEFAULT_OUTPUT}")
    parser.add_argument("--title", help="page title (default: memguard · FILE NAME)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        results = load_results(args.results)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None
    page = render_html(results, title=args.title)
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise UsageError(f"-o {args.output}: cannot write: {exc.strerror or exc}") from None
    print(
        f"wrote {args.output}: {len(results.tests)} {'entries' if results.kind == BASELINE_KIND else 'tests'}, "
        f"{len(results.all_tasks())} task timelines",
        file=sys.stderr,
    )
    return EXIT_OK
