"""The pytest plugin (entry point ``memguard``): memory budgets per test, and failures that say where memory went.

This module only wires pytest to the parts: options (:mod:`.options`), budgets and their precedence
(:mod:`.budgets`), judging (:mod:`.markers`), the session :class:`~.manager.Manager` holding all state, and its
reports (:mod:`.reporting`). Disable it with ``-p no:memguard``. User documentation: ``docs/plugin.md``.
"""

from __future__ import annotations

import pytest

from . import celery_fixtures, gating
from .budgets import Budget, BudgetError, BudgetSet, Limit, ResolvedBudget, resolve_item_budget
from .celery_options import add_celery_options
from .manager import MANAGER_NAME, Manager
from .markers import MARKER_HELP, MEMRAY_MARKER_HELP, BudgetResult, Figures, judge, judge_task_record
from .options import add_options, read_options

__all__ = [
    "Budget",
    "BudgetError",
    "BudgetResult",
    "BudgetSet",
    "Figures",
    "Limit",
    "Manager",
    "ResolvedBudget",
    "get_manager",
    "judge",
    "judge_task_record",
    "resolve_item_budget",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    add_celery_options(parser)
    gating.add_options(parser)


def _memray_active(config: pytest.Config) -> bool:
    """pytest-memray enforces its markers whenever its plugin is loaded (markers alone activate it)."""
    return config.pluginmanager.has_plugin("memray") or config.pluginmanager.has_plugin("pytest_memray.plugin")


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKER_HELP.values():
        config.addinivalue_line("markers", line)
    honor_memray = not _memray_active(config)
    if honor_memray:
        for line in MEMRAY_MARKER_HELP.values():
            config.addinivalue_line("markers", line)
    manager = Manager(config, read_options(config), honor_memray=honor_memray)
    config.pluginmanager.register(manager, MANAGER_NAME)
    celery_fixtures.configure(config, manager)  # Celery fixtures; Celery itself is imported only when used
    gating.configure(config, manager)  # baseline gate, leak hunt, line profiles (issue 6)


def pytest_unconfigure(config: pytest.Config) -> None:
    celery_fixtures.unconfigure(config)
    manager = config.pluginmanager.get_plugin(MANAGER_NAME)
    if manager is not None:
        config.pluginmanager.unregister(manager, MANAGER_NAME)


def get_manager(config: pytest.Config) -> Manager | None:
    """The session's memguard manager (for fixtures and plugins that feed task records or add consumers)."""
    return config.pluginmanager.get_plugin(MANAGER_NAME)
