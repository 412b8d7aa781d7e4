"""pytest-xdist support: budgets are judged on the workers; figures travel to the controller on the report.

Why nothing more is needed: pytest serializes a ``TestReport``'s ``__dict__`` (``_report_to_json``) and restores
unknown keys as attributes (``TestReport(**extra)``), so a plain-JSON ``report.memguard`` set in
``pytest_runtest_makereport`` on a worker arrives intact in the controller's ``pytest_runtest_logreport``. The
controller alone prints the summary and writes the JSON file.
"""

from __future__ import annotations

import pytest

REPORT_ATTR = "memguard"


def is_worker(config: pytest.Config) -> bool:
    """True inside an xdist worker (which must not print the summary or write the JSON file)."""
    return hasattr(config, "workerinput")


def worker_id(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if workerinput else None


def record_from_report(report: pytest.TestReport) -> dict | None:
    """The memguard record a (possibly deserialized) call report carries, if any."""
    if report.when != "call":
        return None
    record = getattr(report, REPORT_ATTR, None)
    return record if isinstance(record, dict) else None
