"""Re-running a test's call phase, for ``--memguard-rerun-traced`` (and leak hunting, which runs it repeatedly).

Why from inside the call phase: the test's fixtures are still set up, so ``item.runtest()`` runs the same function
with the same arguments again without a second setup/teardown. Fixture state the first run changed (files in
``tmp_path``, a mutated object) is seen by the re-run; that is the price of not re-running setup.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import pytest


def rerun_call(
    item: pytest.Item, *, around: Callable[[], AbstractContextManager] | None = None
) -> BaseException | None:
    """Run ``item``'s call phase once more inside ``around()``; return what it raised instead of raising it.

    Only ordinary exceptions are swallowed (a failing re-run still yields its figures); ``KeyboardInterrupt`` and
    pytest's ``Exit`` propagate.
    """
    context = around() if around is not None else nullcontext()
    with context:
        try:
            item.runtest()
        except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
            return exc
    return None
