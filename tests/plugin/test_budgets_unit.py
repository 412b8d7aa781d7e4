"""Budget parsing and precedence, on real collected items (pytester.getitems) and real files."""

from __future__ import annotations

import json

import pytest

from pytest_memguard.plugin.budgets import BudgetError, BudgetSet, load_budget_file, parse_spec, resolve_item_budget


def test_inline_specs_number_size_and_kinds():
    assert parse_spec("200", origin="t").default.peak.mb == 200
    assert parse_spec("1.5GiB", origin="t").default.peak.mb == 1536
    budget = parse_spec("peak=200MB, delta=512KiB ,rss=2GB", origin="t").default
    assert (budget.peak.mb, budget.delta.mb, budget.rss.mb) == (200, 0.5, 2048)
    assert budget.peak.name == "max_peak_mb" and budget.rss.origin == "t"
    assert parse_spec(None, origin="t").is_empty() and parse_spec("  ", origin="t").is_empty()


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("lots", "cannot read 'lots' as a size"),
        ("peak=200MB,heap=3", "cannot read 'heap=3'"),
        ("peak=-3", "cannot read '-3'"),
        ("peak=3XB", "unknown unit 'XB'"),
        ("budgets/none.toml", "budgets file 'budgets/none.toml' not found"),
    ],
)
def test_bad_inline_specs_say_what_and_how(spec, fragment, tmp_path):
    with pytest.raises(BudgetError) as info:
        parse_spec(spec, origin="--memory-budget", base_dirs=[tmp_path])
    assert fragment in str(info.value)
    assert "--memory-budget" in str(info.value)


def test_toml_file_patterns_first_match_and_default_fill(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(
        """
[default]
peak = "100MB"
delta = "5MB"
[tests]
"tests/test_a.py::test_x[1]" = "300MB"
"tests/test_a.py::*" = { peak = "200MB", rss = "1GB" }
"tests/*" = { peak = "50MB" }
[tasks]
"app.tasks.render_*" = { peak = "64MB" }
"""
    )
    budgets = parse_spec(str(path), origin="ini")
    exact = budgets.for_test("tests/test_a.py::test_x[1]")  # '[' in a node id is matched exactly, not as a class
    assert (exact.peak.mb, exact.delta.mb, exact.rss) == (300, 5, None)
    glob = budgets.for_test("tests/test_a.py::test_y")
    assert (glob.peak.mb, glob.delta.mb, glob.rss.mb) == (200, 5, 1024)
    assert budgets.for_test("tests/test_b.py::t").peak.mb == 50
    assert budgets.for_test("other.py::t").peak.mb == 100
    assert budgets.for_task("app.tasks.render_pdf").peak.mb == 64
    assert budgets.for_task("app.tasks.other").is_empty()
    assert "2 test pattern" not in budgets.describe() and "3 test pattern(s)" in budgets.describe()


def test_json_file_same_shape(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"default": {"rss": "2GB"}, "tasks": {"t.*": 10}}))
    budgets = load_budget_file(path, origin="--memory-budget")
    assert budgets.default.rss.mb == 2048 and budgets.for_task("t.x").peak.mb == 10


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("bad.toml", "[default\npeak=1", "not valid TOML"),
        ("bad.json", "{", "not valid JSON"),
        ("sect.toml", "[limits]\npeak='1MB'", "unknown section(s) 'limits'"),
        ("kind.toml", "[default]\nheap='1MB'", "unknown budget kind 'heap'"),
        ("size.toml", "[tests]\n'a::b' = 'big'", "cannot read 'big'"),
        ("shape.json", "[1, 2]", "top level must be a table"),
    ],
)
def test_malformed_files_name_the_file_and_problem(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BudgetError) as info:
        load_budget_file(path, origin="--memory-budget")
    assert fragment in str(info.value) and name in str(info.value)


def test_precedence_closest_marker_per_kind_then_file_then_default(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_prec="""
        import pytest
        pytestmark = [pytest.mark.max_peak_mb(10), pytest.mark.max_rss_mb("1GB")]

        @pytest.mark.max_peak_mb(20)
        class TestC:
            @pytest.mark.max_peak_mb(30)
            def test_func(self): pass
            def test_class(self): pass
            @pytest.mark.parametrize("n", [1, pytest.param(2, marks=pytest.mark.max_peak_mb(40))])
            def test_param(self, n): pass

        def test_module(): pass

        @pytest.mark.max_delta_mb(3)
        @pytest.mark.max_peak_mb(5, task="app.tasks.*")
        @pytest.mark.limit_memory("7 MB")
        def test_tasks_and_memray(): pass
        """
    )
    items = {item.name: item for item in pytester.getitems(pytester.path / "test_prec.py")}
    config = parse_spec("peak=99,delta=9,rss=9GB", origin="--memory-budget")

    def peak(name, **kw):
        return resolve_item_budget(items[name], config, honor_memray=kw.get("memray", True)).test.peak.mb

    assert peak("test_func") == 30
    assert peak("test_class") == 20
    assert peak("test_param[1]") == 20 and peak("test_param[2]") == 40
    assert peak("test_module") == 10
    resolved = resolve_item_budget(items["test_module"], config, honor_memray=True)
    assert resolved.test.rss.mb == 1024 and resolved.test.delta.mb == 9  # rss from pytestmark, delta from option
    resolved = resolve_item_budget(items["test_tasks_and_memray"], config, honor_memray=True)
    assert resolved.test.peak.mb == 7 and resolved.test.peak.name == "limit_memory"  # task= marker not the test's
    assert resolved.test.delta.mb == 3
    assert resolved.for_task("app.tasks.send").peak.mb == 5 and resolved.for_task("other").is_empty()
    assert peak("test_tasks_and_memray", memray=False) == 10  # pytest-memray active: its marker is not ours


@pytest.mark.parametrize(
    "decorator, fragment",
    [
        ("max_peak_mb()", "takes exactly one size, got 0"),
        ("max_peak_mb(1, 2)", "takes exactly one size, got 2"),
        ("max_delta_mb(1, tsk='x')", "unexpected keyword(s) tsk"),
        ("max_rss_mb(1, task=3)", "task= must be a task name"),
        ("max_peak_mb('1 parsec')", "unknown unit 'parsec'"),
    ],
)
def test_bad_markers_name_the_test(pytester: pytest.Pytester, decorator, fragment):
    pytester.makepyfile(test_bad=f"import pytest\n@pytest.mark.{decorator}\ndef test_x(): pass\n")
    (item,) = pytester.getitems(pytester.path / "test_bad.py")
    with pytest.raises(BudgetError) as info:
        resolve_item_budget(item, BudgetSet(), honor_memray=True)
    assert fragment in str(info.value) and "test_bad.py::test_x" in str(info.value)
