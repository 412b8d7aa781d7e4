"""Rendering a :class:`~.compare.Comparison` as a text table, JSON or markdown.

Text is for terminals (the plugin's end-of-session summary, ``memguard compare``); markdown for CI job summaries
and PR comments; JSON is ``Comparison.as_dict()`` and stable. Renderers only format: they decide nothing.
"""

from __future__ import annotations

import json

from .compare import Change, Comparison

FORMATS = ("text", "json", "markdown")
_HEADER = ("name", "metric", "baseline", "now", "change")


def _row(c: Change) -> tuple[str, str, str, str, str]:
    pct = c.change_pct
    change = f"{c.change_mb:+.1f}MB" + (f" ({pct:+.1f}%)" if pct is not None else "")
    return (c.name, c.metric, f"{c.baseline_mb:.1f}MB", f"{c.now_mb:.1f}MB", change)


def _table(changes: list[Change]) -> list[str]:
    rows = [_HEADER, *(_row(c) for c in changes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [r[k].rjust(widths[k]) for k in (2, 3, 4)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _summary(cmp: Comparison) -> str:
    return (
        f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s), "
        f"{len(cmp.unchanged)} unchanged, {len(cmp.new)} new, {len(cmp.missing)} missing "
        f"(tolerance: {cmp.tolerance.describe() or 'none'})"
    )


def render_text(cmp: Comparison, *, show_unchanged: bool = False) -> str:
    """A plain-text report: warnings, regressions and improvements as tables, new/missing names, a summary."""
    lines = [f"warning: {w}" for w in cmp.warnings]
    for title, changes in (("Memory regressions", cmp.regressions), ("Memory improvements", cmp.improvements)):
        if changes:
            lines += [f"{title}:", *_table(changes), ""]
    if show_unchanged and cmp.unchanged:
        lines += ["Unchanged:", *_table(cmp.unchanged), ""]
    if cmp.new:
        lines += [f"New (not in baseline): {', '.join(cmp.new)}"]
    if cmp.missing:
        lines += [f"Missing (in baseline, not measured now): {', '.join(cmp.missing)}"]
    lines.append(_summary(cmp))
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(cmp: Comparison, *, show_unchanged: bool = False) -> str:
    """GitHub-flavoured markdown: a heading with the verdict, tables, and collapsible lists of new/missing names."""
    verdict = "❌ memory regressions" if cmp.failed else "✅ no memory regression"
    lines = [f"### {verdict}", "", _summary(cmp), ""]
    lines += [f"> ⚠️ {_md_escape(w)}" for w in cmp.warnings]
    if cmp.warnings:
        lines.append("")
    sections = [("Regressions", cmp.regressions), ("Improvements", cmp.improvements)]
    if show_unchanged:
        sections.append(("Unchanged", cmp.unchanged))
    for title, changes in sections:
        if not changes:
            continue
        lines += [f"#### {title}", "", "| " + " | ".join(_HEADER) + " |", "|---|---|--:|--:|--:|"]
        lines += ["| " + " | ".join(_md_escape(cell) for cell in _row(c)) + " |" for c in changes]
        lines.append("")
    for title, names in (("New (not in baseline)", cmp.new), ("Missing (not measured now)", cmp.missing)):
        if names:
            lines += [f"<details><summary>{title}: {len(names)}</summary>", ""]
            lines += [f"- `{name}`" for name in names]
            lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(cmp: Comparison) -> str:
    return json.dumps(cmp.as_dict(), indent=2) + "\n"


def render(cmp: Comparison, fmt: str = "text", *, show_unchanged: bool = False) -> str:
    """Render in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "text":
        return render_text(cmp, show_unchanged=show_unchanged)
    if fmt == "markdown":
        return render_markdown(cmp, show_unchanged=show_unchanged)
    if fmt == "json":
        return render_json(cmp)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
