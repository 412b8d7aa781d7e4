"""Running a test's call phase again with *fresh* function-scoped fixtures, from inside its call phase.

Why: ``--memory-repeat`` and ``--hunt-leaks`` run a test's body many times. With the same fixture instances
(:func:`.rerun.rerun_call`), a test that appends to a fixture's object would look like it leaks, although pytest
throws that object away after every test. So, where possible, each run gets what an ordinary run gets:

* **re-created**: every function-scoped fixture (``tmp_path``, ``monkeypatch``, ``capsys``, your own), torn down
  (finalizers run) and set up again through pytest's own ``SetupState`` — the test item alone is torn down, its
  collectors (module, class) stay;
* **kept**: class-, module-, package- and session-scoped fixtures (their cached values are reused, exactly as
  for the next test of the same module); the ``pytest_runtest_setup``/``teardown`` hooks of other plugins are
  *not* called again (pytest-django's database setup, for example, happens once per test, not per run).

Items that are not plain ``pytest.Function`` (doctests, other plugins' items) fall back to the same-fixture
re-run. This reaches into two private pytest APIs (``session._setupstate`` and ``Function._initrequest``, both
also used by pytest-rerunfailures); if they change, :func:`can_refresh` turns false and the same-fixture re-run is
used.

One pytest detail matters for leak hunting: a function-scoped fixture that depends on a broader one (``tmp_path``
on ``tmp_path_factory``) registers a finalizer with it on every setup, released only when the broader fixture
ends. Repeated setups would leave a few hundred bytes per run on the heap — a leak of the hunt, not of the test —
so :func:`call_fresh` drops those finalizers once their fixture has been torn down (calling them later would do
nothing anyway).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from .rerun import rerun_call


def can_refresh(item: pytest.Item) -> bool:
    """True when ``item``'s function-scoped fixtures can be torn down and set up again mid-call."""
    return (
        isinstance(item, pytest.Function)
        and hasattr(item, "_initrequest")
        and hasattr(getattr(item.session, "_setupstate", None), "teardown_exact")
        and item.parent is not None
    )


def _prune_stale_finalizers(item: pytest.Item) -> None:
    """Forget finalizers broader fixtures hold for this item's already torn-down function-scoped fixtures."""
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            finalizers = getattr(fixturedef, "_finalizers", None)
            if not finalizers or getattr(fixturedef, "scope", "function") == "function":
                continue
            finalizers[:] = [fin for fin in finalizers if not _stale(fin, item)]


def _stale(fin: Any, item: pytest.Item) -> bool:
    if not isinstance(fin, functools.partial):
        return False
    owner = getattr(fin.func, "__self__", None)
    request = fin.keywords.get("request")
    return (
        getattr(fin.func, "__name__", "") == "finish"
        and getattr(owner, "cached_result", True) is None  # that fixture is torn down: the finalizer is a no-op
        and getattr(request, "_pyfuncitem", None) is item
    )


def refresh_fixtures(item: pytest.Item) -> None:
    """Tear down ``item``'s function-scoped fixtures and set them up anew (raises what either raises)."""
    setupstate = item.session._setupstate  # type: ignore[attr-defined]
    storage = getattr(item.stash, "_storage", None)
    kept = dict(storage) if isinstance(storage, dict) else {}
    setupstate.teardown_exact(item.parent)  # the item alone: needed collectors = the parent's chain
    if isinstance(storage, dict):
        # Plugins' per-test state that a teardown consumes (tmp_path's setup outcome) was made by hooks that run
        # once per test; put it back so the next teardown finds it.
        for key, value in kept.items():
            storage.setdefault(key, value)
    _prune_stale_finalizers(item)
    item._initrequest()  # type: ignore[attr-defined]
    setupstate.setup(item)


def call_fresh(item: pytest.Item) -> None:
    """One more run of ``item``'s call phase, with fresh function-scoped fixtures where possible.

    Raises what the fixtures or the test raise (the caller decides whether that ends a repeat or a hunt).
    """
    if can_refresh(item):
        refresh_fixtures(item)
        item.runtest()
        return
    exc = rerun_call(item)
    if exc is not None:
        raise exc
