"""``--memguard-profile=NAME``: a line-by-line memory profile (memory-profiler) shown in the test's report.

NAME is either a test function's name (fnmatch pattern on the function name or the node id's last part): that
test's body is profiled; or an importable function ``package.module.func`` / ``package.module:func``: it is
profiled while each selected test runs (select the tests that call it with ``-k``). The profile comes from one
extra run of the call phase after it passed (fresh function-scoped fixtures where possible), never from the
measured run: memory-profiler samples RSS on every line and slows the code tens of times.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from ..leaks import ProfileUnavailable, profile_function
from . import xdist
from .fresh import call_fresh
from .gate_options import resolve_function

PROFILE = pytest.StashKey[str]()
REPORT_ATTR = "memguard_profile"
PROFILE_NAME = "memguard_profile"
_UNRESOLVED = object()


class LineProfiles:
    def __init__(self, config: pytest.Config, name: str, manager: Any) -> None:
        self.config = config
        self.name = name
        self.manager = manager
        self._target: Any = _UNRESOLVED
        self.tables: list[dict] = []

    def target(self) -> Any:
        """The importable function NAME names, or ``None`` (resolved at the first test: imports are ready then)."""
        if self._target is _UNRESOLVED:
            dotted = "." in self.name or ":" in self.name
            self._target = resolve_function(self.name) if dotted else None
        return self._target

    def _is_named_test(self, item: pytest.Item) -> bool:
        names = {item.name, getattr(item, "originalname", item.name), item.nodeid}
        return any(fnmatch.fnmatchcase(n, self.name) for n in names)

    # Inside output capture, outside the manager's measurement: see leak_hunt.LeakHunt.pytest_runtest_call.
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item):
        result = yield
        if self._is_named_test(item) and isinstance(item, pytest.Function):
            target = item.obj
        else:
            target = self.target()
        if target is not None:
            item.stash[PROFILE] = self._profile(item, target)
        return result

    def _profile(self, item: pytest.Item, target: Any) -> str:
        def run_test() -> None:
            call_fresh(item)

        # profile_function profiles ``func.__wrapped__`` while calling ``func``: the test re-run drives the target.
        run_test.__wrapped__ = target  # type: ignore[attr-defined]
        self.manager.current_item = item
        try:
            return profile_function(run_test) or ""
        except ProfileUnavailable as exc:
            return str(exc)
        except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
            return f"profile run raised {type(exc).__name__}: {exc}"
        finally:
            self.manager.current_item = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        table = item.stash.get(PROFILE, None) if call.when == "call" else None
        if table:
            report.sections.append((f"memguard: profile {self.name}", table))
            setattr(report, REPORT_ATTR, {"nodeid": item.nodeid, "name": self.name, "table": table})
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_ATTR, None)
        if report.when == "call" and isinstance(data, dict):
            self.tables.append(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if xdist.is_worker(self.config):
            return
        terminalreporter.write_sep("=", f"memguard: line profile of {self.name}")
        if not self.tables:
            terminalreporter.write_line(
                f"memguard: --memguard-profile={self.name}: no selected test is named so or ran that function "
                "(give a test function name, or an importable package.module.func)"
            )
        for data in self.tables:
            terminalreporter.write_line(f"during {data['nodeid']}:")
            for line in data["table"].rstrip("\n").splitlines():
                terminalreporter.write_line(line)


def register_profiles(config: pytest.Config, name: str, manager: Any) -> LineProfiles:
    plugin = LineProfiles(config, name, manager)
    config.pluginmanager.register(plugin, PROFILE_NAME)
    return plugin
