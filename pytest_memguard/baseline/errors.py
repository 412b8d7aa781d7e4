"""The one error type of the baseline layer.

Why a single class: the plugin and ``memguard compare`` turn it into a one-line message and exit status 2 without
knowing which of storage, format, tolerance or results reading raised it. Messages are already one line, name the
file or value, and say how to fix it.
"""

from __future__ import annotations


class BaselineError(ValueError):
    """A baseline or results file, or a tolerance spec, that cannot be used; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ToleranceError(BaselineError):
    """A ``--memory-regression`` / ``--fail-on`` spec that cannot be read."""
