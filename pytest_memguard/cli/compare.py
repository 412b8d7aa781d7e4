"""``memguard compare OLD.json NEW.json [--fail-on SPEC] [--format text|json|markdown]``.

The regression gate outside pytest: compare two runs (baseline files or ``--memguard-json`` results files, in
any mix) and print the same table the plugin prints at the end of a session. Markdown suits CI job summaries
and PR comments (``>> "$GITHUB_STEP_SUMMARY"``).

Exit status: 0 no regression, 1 regressions, 2 usage error or unreadable file (one line naming it).
All the logic lives in :mod:`pytest_memguard.baseline`; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import sys

from ..baseline import (
    FORMATS,
    BaselineError,
    Tolerance,
    ToleranceError,
    compare,
    load_entries,
    machine_warning,
    parse_tolerance,
    render,
)
from .usage import UsageError

DEFAULT_FAIL_ON = "10%"


def _tolerance(text: str) -> Tolerance:
    try:
        return parse_tolerance(text, what="--fail-on")
    except ToleranceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="compare two baseline or results files; exit 1 on a memory regression",
        description=(
            "Compare NEW against OLD (baseline files from --memory-baseline-save or results from --memguard-json) "
            "and report regressions, improvements, new and missing tests and tasks."
        ),
    )
    parser.add_argument("old", metavar="OLD.json", help="the reference run (baseline or results file)")
    parser.add_argument("new", metavar="NEW.json", help="the run to judge (baseline or results file)")
    parser.add_argument(
        "--fail-on",
        type=_tolerance,
        default=DEFAULT_FAIL_ON,
        metavar="SPEC",
        help=f"tolerance, e.g. '10%%', '+5MB', '10%%,+5MB', 'peak:10%%,delta:+2MB' (default {DEFAULT_FAIL_ON})",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    parser.add_argument("--show-unchanged", action="store_true", help="list unchanged figures too")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    tolerance = args.fail_on if isinstance(args.fail_on, Tolerance) else _tolerance(args.fail_on)
    try:
        old_entries, old_machine = load_entries(args.old)
        new_entries, new_machine = load_entries(args.new)
    except BaselineError as exc:
        raise UsageError(str(exc)) from None
    warnings = []
    if old_machine and new_machine:
        warning = machine_warning(old_machine, new_machine, source=args.old)
        if warning:
            warnings.append(warning)
    comparison = compare(old_entries, new_entries, tolerance, warnings=warnings)
    sys.stdout.write(render(comparison, args.format, show_unchanged=args.show_unchanged))
    return 1 if comparison.failed else 0
