"""Wiring of issue 6 into the plugin: the regression gate, the leak hunt and line profiles, in two calls.

Why one module: ``plugin/__init__.py`` is shared by several features; it calls :func:`add_options` and
:func:`configure` and nothing else of these, so the features below can change without touching it.
"""

from __future__ import annotations

from typing import Any

import pytest

from .gate_options import add_gate_options, read_gate_options
from .gates import register_gate
from .leak_hunt import register_leak_hunt
from .profiling import register_profiles


def add_options(parser: pytest.Parser) -> None:
    add_gate_options(parser)


def configure(config: pytest.Config, manager: Any) -> None:
    """Register the gate (only when saving, comparing or repeating), the leak hunt (always: the ``max_leak_kb``
    marker alone hunts its test) and the line profiles (with ``--memguard-profile``)."""
    options = read_gate_options(config)
    if options.gating or options.repeat > 1:
        register_gate(config, options, manager)
    register_leak_hunt(config, options.hunt, manager)
    if options.profile:
        register_profiles(config, options.profile, manager)
