"""``memguard html``: the numbers in the page are the numbers in the JSON, and a real browser draws them."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from pytest_memguard.cli import main
from pytest_memguard.cli.html import DELTA_COLOUR, OVER_COLOUR, PEAK_COLOUR
from tests.services import require_chromium

from .png import colour_counts, read_png

SCRIPT_NODEID = "tests/test_docs.py::test_small[<script>alert(1)</script>]"

RESULTS = {
    "version": 1,
    "tests": [
        {
            "nodeid": "tests/test_docs.py::test_process_document[large-pdf]",
            "peak_mb": 212.4,
            "delta_mb": 18.2,
            "rss_mb": 389.7,
            "budget": {"peak_mb": 150, "delta_mb": 25},
            "outcome": "failed",
            "tasks": [
                {
                    "task_id": "a1b2c3",
                    "task_name": "fileintel.tasks.document_tasks.process_document",
                    "state": "SUCCESS",
                    "peak_mb": 512.7,
                    "delta_mb": 125.4,
                    "peak_delta_mb": 267.4,
                    "start_mb": 245.3,
                    "finish_mb": 370.7,
                    "duration_s": 3.42,
                    "checkpoints": [
                        {"label": "START", "time_s": 0, "rss_mb": 245.3},
                        {"label": "after_chunking", "time_s": 1.1, "rss_mb": 480.2},
                        {"label": "after_embedding", "time_s": 2.6, "rss_mb": 455.9},
                        {"label": "FINISH", "time_s": 3.42, "rss_mb": 370.7},
                    ],
                }
            ],
        },
        {
            "nodeid": SCRIPT_NODEID,
            "peak_mb": 12.3,
            "delta_mb": -3.5,
            "rss_mb": 98.1,
            "budget": {"peak_mb": 50, "delta_mb": 5, "rss_mb": 90},
            "outcome": "passed",
        },
        {"nodeid": "tests/test_search.py::test_query", "peak_mb": 64.0, "delta_mb": 0.4, "rss_mb": 150.2},
    ],
    "tasks": [
        {
            "task_id": "d4e5f6",
            "task_name": "fileintel.tasks.cleanup",
            "state": "FAILURE",
            "peak_mb": 101.0,
            "delta_mb": 1.0,
            "peak_delta_mb": 2.0,
            "start_mb": 99.0,
            "finish_mb": 100.0,
            "duration_s": 0.2,
            "checkpoints": [],
        }
    ],
}


class Page(HTMLParser):
    """The SVG elements that carry numbers, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: dict[tuple[str, str], dict] = {}  # (nodeid, peak|delta) -> attributes
        self.budgets: dict[tuple[str, str], float] = {}
        self.checkpoints: dict[str, list[tuple[str, float, float]]] = {}
        self.task_peaks: dict[str, float] = {}
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._nodeid: str | None = None
        self._task: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        classes = (a.get("class") or "").split()
        if tag == "g" and "test" in classes:
            self._nodeid = a["data-nodeid"]
        elif tag == "div" and "task" in classes:
            self._task = a["data-task-id"]
            self.checkpoints[self._task] = []
        elif tag == "rect" and "bar" in classes:
            self.bars[(self._nodeid, classes[1])] = {"value": float(a["data-value"]), "over": "over" in classes}
        elif tag == "line" and "budget" in classes:
            self.budgets[(self._nodeid, classes[1])] = float(a["data-value"])
        elif tag == "line" and "peak" in classes:
            self.task_peaks[self._task] = float(a["data-value"])
        elif tag == "circle" and "checkpoint" in classes:
            self.checkpoints[self._task].append((a["data-label"], float(a["data-time"]), float(a["data-value"])))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    return parser


def assert_numbers_match(page: Page) -> None:
    """Every bar, budget marker and checkpoint in the page is the JSON's number for it."""
    for test in RESULTS["tests"]:
        over_budget = {k for k, v in test.get("budget", {}).items() if k in ("peak_mb", "delta_mb") and test[k] > v}
        for kind in ("peak", "delta"):
            bar = page.bars[(test["nodeid"], kind)]
            assert bar["value"] == test[f"{kind}_mb"]
            assert bar["over"] == (f"{kind}_mb" in over_budget)
            budget = test.get("budget", {}).get(f"{kind}_mb")
            assert page.budgets.get((test["nodeid"], kind)) == budget
    text = " ".join(page.text)
    for test in RESULTS["tests"]:
        for key in ("peak_mb", "delta_mb", "rss_mb"):
            assert f"{test[key]:.1f}" in text
    task = RESULTS["tests"][0]["tasks"][0]
    assert page.checkpoints[task["task_id"]] == [(c["label"], c["time_s"], c["rss_mb"]) for c in task["checkpoints"]]
    assert page.task_peaks[task["task_id"]] == task["peak_mb"]
    for checkpoint in task["checkpoints"]:
        assert f"{checkpoint['label']} {checkpoint['rss_mb']:.1f}" in text
    cleanup = RESULTS["tasks"][0]  # no checkpoints: drawn from start to finish
    assert page.checkpoints["d4e5f6"] == [("start", 0.0, 99.0), ("finish", 0.2, 100.0)]
    assert page.task_peaks["d4e5f6"] == cleanup["peak_mb"]


@pytest.fixture
def rendered(tmp_path, capsys):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(RESULTS))
    out = tmp_path / "report.html"
    assert main(["html", str(source), "-o", str(out)]) == 0
    assert capsys.readouterr().err == f"wrote {out}: 3 tests, 2 task timelines\n"
    return out


def test_page_numbers_are_the_json_numbers(rendered):
    page_text = rendered.read_text()
    page = parse(page_text)
    assert_numbers_match(page)
    assert len(page.bars) == 6 and len(page.checkpoints) == 2
    text = " ".join(page.text)
    assert "over peak" in text  # the table says which budget was exceeded
    assert "over rss" in text  # 98.1 MB against an RSS budget of 90 MB


def test_page_is_self_contained_and_escapes_test_ids(rendered):
    page_text = rendered.read_text()
    lowered = page_text.lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "<link", "<iframe"):
        assert forbidden not in lowered
    assert lowered.count("http") == lowered.count('xmlns="http://www.w3.org/2000/svg"')
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page_text
    assert page_text.count("<svg") == 3  # one bar chart, two task timelines


def test_baseline_file_renders_bars_without_budgets(tmp_path):
    baseline = {
        "version": 1,
        "kind": "memguard-baseline",
        "entries": {"tests/a.py::test_one": {"peak_mb": 30.5, "delta_mb": 1.5, "rss_mb": 80.0}},
    }
    source = tmp_path / "baseline.json"
    source.write_text(json.dumps(baseline))
    out = tmp_path / "b.html"
    assert main(["html", str(source), "-o", str(out), "--title", "nightly baseline"]) == 0
    page = parse(out.read_text())
    assert page.bars[("tests/a.py::test_one", "peak")] == {"value": 30.5, "over": False}
    assert page.bars[("tests/a.py::test_one", "delta")] == {"value": 1.5, "over": False}
    assert page.budgets == {}
    assert "nightly baseline" in page.text


def test_results_from_standard_input(tmp_path, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(RESULTS)))
    out = tmp_path / "stdin.html"
    assert main(["html", "-", "-o", str(out)]) == 0
    assert_numbers_match(parse(out.read_text()))


# -- a real browser ------------------------------------------------------------------------------------------------


def chromium(*args: str) -> subprocess.CompletedProcess:
    browser = require_chromium()
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--user-data-dir={profile}", *args,
            ],
            capture_output=True,
            timeout=60,
        )  # fmt: skip


def test_chromium_draws_the_chart_with_the_json_numbers(rendered, tmp_path):
    result = chromium("--dump-dom", rendered.as_uri())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    dom = result.stdout.decode()
    assert "<svg" in dom and 'class="bar peak over"' in dom
    assert_numbers_match(parse(dom))  # the browser's DOM, not our string, carries the numbers

    shot = tmp_path / "shot.png"
    result = chromium("--window-size=1000,700", f"--screenshot={shot}", rendered.as_uri())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1000, 700)
    colours = colour_counts(rows)
    assert len(colours) > 50  # text, bars, lines: not a blank page
    # The bars were painted in their colours: peak (blue), delta (orange), over budget (red).
    for colour in (PEAK_COLOUR, DELTA_COLOUR, OVER_COLOUR):
        assert colours[colour.lstrip("#")] > 200, (colour, colours.most_common(10))
    if os.environ.get("MEMGUARD_KEEP_SCREENSHOT"):
        shot.replace(os.environ["MEMGUARD_KEEP_SCREENSHOT"])
