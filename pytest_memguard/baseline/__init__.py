"""Regression gate data: baseline files, machine profiles, tolerances, comparison and its rendering.

No pytest here: the plugin wires these in with thin hooks, and ``memguard compare`` uses them unchanged.
Layering: ``format`` ← ``storage``/``results`` ← ``compare`` ← ``render``; ``tolerance`` and ``machine`` stand alone.
"""

from .compare import Change, Comparison, compare
from .errors import BaselineError, ToleranceError
from .format import FORMAT_VERSION, KIND, METRICS, Baseline, Entry, baseline_from_dict, coerce_entries
from .machine import commit_info, machine_differences, machine_info, machine_warning
from .noise import keep_min_peak, min_peak
from .render import FORMATS, render, render_json, render_markdown, render_text
from .results import (
    add_task_records,
    entries_from_results,
    entry_from_measurement,
    entry_from_task,
    entry_from_test,
    load_entries,
    task_entry_name,
)
from .storage import DEFAULT_BASELINE_PATH, FileStorage, load_baseline, merge_into_baseline, save_baseline
from .tolerance import NOISE_FLOOR_MB, Rule, Tolerance, parse_tolerance

__all__ = [
    "DEFAULT_BASELINE_PATH",
    "FORMATS",
    "FORMAT_VERSION",
    "KIND",
    "METRICS",
    "NOISE_FLOOR_MB",
    "Baseline",
    "BaselineError",
    "Change",
    "Comparison",
    "Entry",
    "FileStorage",
    "Rule",
    "Tolerance",
    "ToleranceError",
    "add_task_records",
    "baseline_from_dict",
    "coerce_entries",
    "commit_info",
    "compare",
    "entries_from_results",
    "entry_from_measurement",
    "entry_from_task",
    "entry_from_test",
    "keep_min_peak",
    "load_baseline",
    "load_entries",
    "machine_differences",
    "machine_info",
    "machine_warning",
    "merge_into_baseline",
    "min_peak",
    "parse_tolerance",
    "render",
    "render_json",
    "render_markdown",
    "render_text",
    "save_baseline",
    "task_entry_name",
]
