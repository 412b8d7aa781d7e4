"""The Celery fixtures: real tasks of the app under test, eagerly or on a real worker, judged per task.

Thin wrappers (Celery ``contrib/testing``'s shape) around :mod:`pytest_memguard.celery.testing`, which works from any
script: ``eager_tasks(app)`` and ``worker_session(app, ...)``. User documentation: ``docs/celery-testing.md``.

- ``memguard_celery_app`` (session): the app, from the ini key ``memguard_celery_app = pkg.module:app``; override it.
- ``memguard_celery_worker`` (session): a real worker process started the first time a worker-mode test needs it, on
  the embedded broker in a temp folder of its own (per xdist worker) or on ``--memguard-celery-broker``.
- ``celery_mode`` (function): ``"eager"`` or ``"worker"`` — the ``celery_mode`` marker > option > ini > eager.
- ``celery_memory`` (function): the test's ``TaskMemory`` records (:class:`.celery_memory.CeleryMemory`).
- ``celery_run`` (function): run a task in the test's mode, get ``.value`` and ``.memory`` back.

At the end of the call phase (a :attr:`Manager.consumers` entry, inside the measured-call wrapper, after the test's
own monitor stopped) every record of the test is gathered — bounded, shorter when the worker died — and judged
against the test's ``task=`` budgets and the budgets file's ``[tasks]``. A ``WORKER_LOST`` record, or a sent task
whose record never came, fails the test. A failing test's report gets its records and the worker's log.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

from . import xdist
from .budgets import ResolvedBudget
from .celery_memory import WORKER_LOST, CeleryMemory, CeleryRunner, TaskProblem
from .celery_options import MODES, CeleryTestOptions, read_celery_options
from .markers import judge_task_record

PLUGIN_NAME = "memguard_celery"
MARKER = "celery_mode"
MARKER_HELP = (
    "celery_mode(*modes): run this test's Celery tasks 'eager' (in the test process) or on a real 'worker' "
    "process; two modes run the test once in each (ids [eager] and [worker])."
)
MEMORY = pytest.StashKey[CeleryMemory]()
OPTIONS = pytest.StashKey[CeleryTestOptions]()

_CELERY_MISSING = "pytest-memguard: the Celery fixtures need Celery: pip install 'pytest-memguard[celery]'"


def configure(config: pytest.Config, manager: Any) -> None:
    """Read the options, register this module's fixtures and hooks, and judge task records after each call."""
    config.stash[OPTIONS] = read_celery_options(config)
    config.addinivalue_line("markers", MARKER_HELP)
    import sys

    config.pluginmanager.register(sys.modules[__name__], PLUGIN_NAME)
    manager.consumers.append(_judge_tasks(manager))


def unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if plugin is not None:
        config.pluginmanager.unregister(plugin, PLUGIN_NAME)


def options(config: pytest.Config) -> CeleryTestOptions:
    return config.stash[OPTIONS]


def _marker_modes(item: Any) -> tuple[str, ...] | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    modes = tuple(str(m).strip().lower() for m in marker.args)
    bad = [m for m in modes if m not in MODES] + [f"{k}=" for k in marker.kwargs]
    if not modes or bad:
        pytest.fail(
            f"pytest-memguard: {item.nodeid}: @pytest.mark.celery_mode takes 'eager' and/or 'worker', got "
            f'{", ".join(repr(m) for m in (bad or ["nothing"]))}; write @pytest.mark.celery_mode("worker")',
            pytrace=False,
        )
    return modes


def mode_of(request: pytest.FixtureRequest) -> str:
    """The test's mode: the parametrized one (two-mode marker), its ``celery_mode`` marker, the option/ini, eager."""
    param = getattr(request, "param", None)
    if param in MODES:
        return param
    modes = _marker_modes(request.node)
    return modes[0] if modes else options(request.config).mode


# -- hooks ---------------------------------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    modes = tuple(str(m).strip().lower() for m in marker.args) if marker else ()
    if len(modes) > 1 and all(m in MODES for m in modes):
        if MARKER not in metafunc.fixturenames:
            metafunc.fixturenames.append(MARKER)
        metafunc.parametrize(MARKER, list(dict.fromkeys(modes)), indirect=True, ids=list(dict.fromkeys(modes)))


def pytest_report_header(config: pytest.Config) -> str | None:
    o = options(config)
    if o.app_path is None and o.mode == "eager" and o.broker is None:
        return None
    broker = o.broker or "embedded memguard-fs broker in a temp folder"
    return (
        f"memguard celery: app {o.app_path or '(fixture)'}; default mode {o.mode}; worker: {broker}, "
        f"{o.pool} x{o.concurrency}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    memory = item.stash.get(MEMORY, None)
    if memory is not None and call.when == "call" and report.failed:
        records, missing = memory.final or ([], [])
        lines = [r.summary() for r in records] + [f"[{task_id}] no memory record" for task_id in missing]
        report.sections.append((f"memguard: celery tasks ({memory.mode})", "\n".join(lines) or "(no tasks ran)"))
        if memory.worker is not None:
            report.sections.append(
                (f"memguard: celery worker log ({memory.worker.log_path})", memory.log_since_start())
            )
    return report


def _judge_tasks(manager: Any):
    def consume(item: pytest.Item, outcome: Any) -> list | None:
        memory = item.stash.get(MEMORY, None)
        if memory is None:
            return None
        records, missing = memory.finish()
        resolved = manager.state(item).budget or ResolvedBudget()
        outcome.task_results.extend((record, judge_task_record(record, resolved)) for record in records)
        problems = [TaskProblem.worker_lost(r) for r in records if r.state == WORKER_LOST]
        problems += [TaskProblem.no_record(task_id, memory.timeout, memory._alive()) for task_id in missing]
        return problems

    return consume


# -- fixtures ------------------------------------------------------------------------------------------------------
def _import_testing():
    try:
        from ..celery import testing
    except ImportError as exc:
        problem = f"{_CELERY_MISSING} ({exc})"
    else:
        return testing
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def memguard_celery_app(pytestconfig: pytest.Config) -> Any:
    """The Celery app under test, instrumented. From the ini key ``memguard_celery_app = pkg.module:app`` (or
    ``--memguard-celery-app``); override this fixture to build the app in code."""
    o = options(pytestconfig)
    if o.app_path is None:
        pytest.fail(
            "pytest-memguard: no Celery app under test: set the ini key memguard_celery_app = pkg.module:app (or "
            "--memguard-celery-app=pkg.module:app), or override the memguard_celery_app fixture",
            pytrace=False,
        )
    testing = _import_testing()
    try:
        app, problem = testing.load_app(o.app_path), None
    except testing.AppPathError as exc:
        app, problem = None, f"pytest-memguard: {o.app_origin}: {exc}"
    if problem:  # failed outside the except block: one line, no "during handling" chain
        pytest.fail(problem, pytrace=False)
    from ..celery import instrument

    instrument(app)
    return app


@pytest.fixture(scope="session")
def memguard_celery_worker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, memguard_celery_app: Any
):
    """A real worker process for the session (``WorkerSession``: ``.worker.pid``, ``.worker.log_text()``,
    ``.queue``, ``.settings``), started on first use; per xdist worker its own folder and queue."""
    o = options(pytestconfig)
    testing = _import_testing()
    app_path = o.app_path or testing.app_import_path(memguard_celery_app)
    if app_path is None:
        pytest.fail(
            f"pytest-memguard: cannot tell the worker where the Celery app {memguard_celery_app.main!r} is defined; "
            "set the ini key memguard_celery_app = pkg.module:app",
            pytrace=False,
        )
    who = xdist.worker_id(pytestconfig) or "main"
    folder = tmp_path_factory.mktemp(f"memguard-celery-{who}", numbered=True)
    from ..celery import WorkerStartError

    try:
        with testing.worker_session(
            memguard_celery_app,
            app_path,
            folder,
            broker=o.broker,
            backend=o.backend,
            queue=f"memguard-{who}-{uuid.uuid4().hex[:8]}",
            pool=o.pool,
            concurrency=o.concurrency,
            ready_timeout=max(o.timeout, 30.0),
        ) as session:
            yield session
    except WorkerStartError as exc:
        pytest.fail(f"pytest-memguard: the Celery test worker did not start: {exc}", pytrace=False)


@pytest.fixture
def celery_mode(request: pytest.FixtureRequest) -> str:
    """``"eager"`` or ``"worker"``: the ``celery_mode`` marker, else ``--memguard-celery-mode``/ini, else eager."""
    return mode_of(request)


@pytest.fixture
def celery_memory(request: pytest.FixtureRequest, celery_mode: str, memguard_celery_app: Any):
    """Every ``TaskMemory`` of this test's Celery tasks (``.records``, ``.by_name(pattern)``, ``.get(task_id)``),
    with the tasks run in the test's mode; each is judged against the test's ``task=`` budgets at the end."""
    from ..celery import collect_task_memories

    testing = _import_testing()
    o = options(request.config)
    session = None
    with contextlib.ExitStack() as stack:
        if celery_mode == "worker":
            session = request.getfixturevalue("memguard_celery_worker")
            session.ensure_alive()
        else:
            stack.enter_context(testing.eager_tasks(memguard_celery_app))
        collector = stack.enter_context(collect_task_memories(memguard_celery_app))
        memory = CeleryMemory(memguard_celery_app, celery_mode, collector, o.timeout, session)
        if _hunted(request):  # --hunt-leaks hunts each task the test starts, with its arguments: log them
            from ..celery.sends import SendLog

            memory.sends = stack.enter_context(SendLog())
        request.node.stash[MEMORY] = memory
        yield memory


def _hunted(request: pytest.FixtureRequest) -> bool:
    from .leak_hunt import HUNT_NAME

    hunt = request.config.pluginmanager.get_plugin(HUNT_NAME)
    return hunt is not None and hunt.wants(request.node)


@pytest.fixture
def celery_run(celery_memory: CeleryMemory) -> CeleryRunner:
    """``celery_run(task, *args, **kwargs)`` → ``TaskRun(result, value, memory)``, in the test's mode."""
    return CeleryRunner(celery_memory)


@pytest.fixture(autouse=True)
def _memguard_celery_auto(request: pytest.FixtureRequest) -> None:
    """A test with a ``celery_mode`` marker, or a ``task=`` budget while an app is configured, gets
    ``celery_memory`` even if it does not ask for it: its tasks must run in its mode and be judged."""
    node = request.node
    wanted = node.get_closest_marker(MARKER) is not None
    if not wanted and options(request.config).app_path is not None:
        wanted = any(
            "task" in m.kwargs
            for name in ("max_peak_mb", "max_delta_mb", "max_rss_mb")
            for m in node.iter_markers(name)
        )
    if wanted and "celery_memory" not in request.fixturenames:
        request.getfixturevalue("celery_memory")
