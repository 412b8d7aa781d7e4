"""``memguard report``: one snapshot of system, cgroup, Celery workers, Redis and PostgreSQL memory.

Replaces the seed's ``scripts/memory_report.py`` without Docker: figures come from the kernel (via psutil and the
cgroup files), from Redis's ``INFO memory`` and from PostgreSQL's size functions. Collection fills typed
dataclasses (one module per source); rendering to text or JSON is separate and never measures anything.

Exit status: 0 fine, 1 a ``--fail-above`` threshold was crossed (the text says which), 2 a usage error. A source
that is down is reported in its section and does not change the exit status: the report is for reading memory,
not for health-checking services.

The JSON output is stable: :data:`REPORT_SCHEMA` describes it (JSON Schema, draft 2020-12), sizes are bytes,
percentages are 0–100 with one decimal, and ``null`` means unknown or not applicable. A new field may be added
with a bump of ``schema_version``; existing fields keep their names and meaning.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..runtime.units import format_bytes
from .postgres_info import POSTGRES_EXAMPLE, POSTGRES_SCHEMES, PostgresSection, collect_postgres
from .redis_info import REDIS_EXAMPLE, REDIS_SCHEMES, RedisSection, collect_redis
from .system_info import SystemSection, collect_system
from .thresholds import ThresholdResult, evaluate, parse_fail_above
from .usage import EXIT_OK, EXIT_THRESHOLD, check_url, compiled_regex
from .workers import DEFAULT_PATTERN, WorkersSection, collect_workers

SCHEMA_VERSION = 1
REDIS_ENV = "MEMGUARD_REDIS_URL"
POSTGRES_ENV = "MEMGUARD_POSTGRES_URL"


@dataclass
class Report:
    schema_version: int
    generated_at: str  # ISO 8601, UTC
    hostname: str
    system: SystemSection
    workers: WorkersSection
    redis: RedisSection | None  # None: no URL given
    postgres: PostgresSection | None
    thresholds: list[ThresholdResult] = field(default_factory=list)

    @property
    def crossed(self) -> list[ThresholdResult]:
        return [t for t in self.thresholds if t.crossed]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["status"] = "threshold_crossed" if self.crossed else "ok"
        return data


# -- collection ------------------------------------------------------------------------------------------------


def collect_report(
    *,
    workers_pattern: re.Pattern[str] | None = None,
    uss: bool = False,
    redis_url: str | None = None,
    postgres_url: str | None = None,
    fail_above: list[str] | None = None,
) -> Report:
    """Measure everything the report shows. Raises UsageError only for bad arguments, never for a down source."""
    thresholds = parse_fail_above(fail_above or [])
    pattern = workers_pattern if workers_pattern is not None else re.compile(DEFAULT_PATTERN)
    system = collect_system()
    workers = collect_workers(pattern, uss=uss, limit_bytes=system.effective_limit_bytes)
    report = Report(
        schema_version=SCHEMA_VERSION,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        system=system,
        workers=workers,
        redis=collect_redis(redis_url) if redis_url else None,
        postgres=collect_postgres(postgres_url) if postgres_url else None,
    )
    report.thresholds = evaluate(thresholds, system, workers)
    return report


# -- rendering ---------------------------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """The report as JSON matching :data:`REPORT_SCHEMA`."""
    return json.dumps(report.as_dict(), indent=2)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}%"


def format_age(seconds: float | None) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``4d03h``: ages a person compares at a glance."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _system_lines(system: SystemSection) -> list[str]:
    lines = ["System"]
    if system.error:
        lines.append(f"  unavailable: {system.error}")
    lines.append(
        f"  memory      {format_bytes(system.total_bytes)} total, {format_bytes(system.available_bytes)} available, "
        f"{format_bytes(system.used_bytes)} used ({_pct(system.used_percent)})"
    )
    if system.swap_total_bytes:
        lines.append(
            f"  swap        {format_bytes(system.swap_total_bytes)} total, {format_bytes(system.swap_used_bytes)} used "
            f"({_pct(system.swap_percent)})"
        )
    else:
        lines.append("  swap        none")
    cg = system.cgroup
    if cg is None:
        lines.append("  cgroup      none found (not in a memory cgroup)")
    else:
        names = (
            ("memory.current", "memory.max", "memory.peak")
            if cg.version == 2
            else ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.max_usage_in_bytes")
        )
        limit = (
            "no limit" if cg.limit_bytes is None else f"{format_bytes(cg.limit_bytes)} ({_pct(cg.used_percent)} used)"
        )
        lines.append(f"  cgroup v{cg.version}   {cg.path}")
        lines.append(f"    {names[0]:<26}{format_bytes(cg.current_bytes)}")
        lines.append(f"    {names[1]:<26}{limit}")
        lines.append(f"    {names[2]:<26}{format_bytes(cg.peak_bytes)}")
        lines.append(f"    {'oom_kill':<26}{'?' if cg.oom_kill is None else cg.oom_kill}")
    lines.append(f"  effective limit  {format_bytes(system.effective_limit_bytes)} ({system.limit_source})")
    return lines


def _workers_lines(workers: WorkersSection) -> list[str]:
    lines = [f"Celery workers (command lines matching {workers.pattern!r})"]
    if workers.error:
        return [*lines, f"  unavailable: {workers.error}"]
    if not workers.processes:
        return [*lines, "  no worker processes found"]
    header = f"  {'PID':>8}  {'ROLE':<6} {'RSS':>10} {'USS':>10} {'%LIMIT':>7} {'AGE':>7} {'TASKS':>6}"
    lines.append(header)
    for p in workers.processes:
        uss = format_bytes(p.uss_bytes) if workers.uss_requested else "-"
        tasks = "?" if p.tasks_processed is None else str(p.tasks_processed)
        pid = str(p.pid) if p.role == "main" else f"└ {p.pid}"
        lines.append(
            f"  {pid:>8}  {p.role:<6} {format_bytes(p.rss_bytes):>10} {uss:>10} {_pct(p.percent_of_limit):>7} "
            f"{format_age(p.age_s):>7} {tasks:>6}"
        )
    mains = [p for p in workers.processes if p.role == "main"]
    lines.append(
        f"  total: {len(mains)} worker(s), {len(workers.processes)} processes, "
        f"{format_bytes(workers.total_rss_bytes)} RSS ({_pct(workers.total_percent)} of "
        f"{format_bytes(workers.limit_bytes)})"
    )
    for p in mains:
        lines.append(f"  {p.pid}: {p.cmdline[:100]}{'…' if len(p.cmdline) > 100 else ''}")
    return lines


def _redis_lines(redis: RedisSection) -> list[str]:
    lines = [f"Redis ({redis.url})"]
    if redis.error:
        return [*lines, f"  unavailable: {redis.error}"]
    ratio = "?" if redis.fragmentation_ratio is None else f"{redis.fragmentation_ratio:.2f}"
    maxmemory = "no limit" if redis.maxmemory_bytes is None else format_bytes(redis.maxmemory_bytes)
    lines += [
        f"  used        {format_bytes(redis.used_memory_bytes)} (peak {format_bytes(redis.used_memory_peak_bytes)})",
        f"  rss         {format_bytes(redis.used_memory_rss_bytes)} (fragmentation ratio {ratio})",
        f"  maxmemory   {maxmemory} (policy {redis.maxmemory_policy or '?'})",
    ]
    return lines


def _postgres_lines(pg: PostgresSection) -> list[str]:
    lines = [f"PostgreSQL ({pg.url})"]
    if pg.error:
        return [*lines, f"  unavailable: {pg.error}"]
    lines.append(f"  database {pg.database}: {format_bytes(pg.database_size_bytes)}")
    if not pg.tables:
        return [*lines, "  no user tables"]
    lines.append("  largest tables (total = table + indexes + TOAST):")
    width = max(len(f"{t.schema}.{t.name}") for t in pg.tables)
    for t in pg.tables:
        rows = "?" if t.rows_estimate is None else f"{t.rows_estimate:,}"
        lines.append(
            f"    {t.schema + '.' + t.name:<{width}}  {format_bytes(t.total_bytes):>10}  "
            f"(table {format_bytes(t.table_bytes)}, indexes {format_bytes(t.indexes_bytes)}, ~{rows} rows)"
        )
    return lines


def render_text(report: Report) -> str:
    """The report as sections a person scans top to bottom; thresholds last, where the eye ends."""
    lines = [f"memguard report — {report.hostname} — {report.generated_at}", ""]
    lines += _system_lines(report.system) + [""]
    lines += _workers_lines(report.workers) + [""]
    if report.redis is not None:
        lines += _redis_lines(report.redis) + [""]
    if report.postgres is not None:
        lines += _postgres_lines(report.postgres) + [""]
    if report.thresholds:
        lines.append("Thresholds (--fail-above)")
        for t in report.thresholds:
            lines.append(f"  {'CROSSED' if t.crossed else 'ok':<8}{t.message}")
        lines.append("")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------------------------


def _url_from(value: str | None, env: str, *, flag: str, schemes: tuple[str, ...], example: str) -> str | None:
    if value is None:
        value = os.environ.get(env) or None
        flag = f"{env} (environment)"
    if value is None:
        return None
    return check_url(value, schemes=schemes, what=flag, example=example)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="one snapshot of system, cgroup, Celery worker, Redis and PostgreSQL memory",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("--redis-url", metavar="URL", help=f"Redis to report on (default ${REDIS_ENV})")
    parser.add_argument("--postgres-url", metavar="URL", help=f"PostgreSQL to report on (default ${POSTGRES_ENV})")
    parser.add_argument(
        "--workers",
        metavar="PATTERN",
        default=DEFAULT_PATTERN,
        type=compiled_regex,
        help=f"regular expression matched against command lines (default {DEFAULT_PATTERN!r})",
    )
    parser.add_argument("--uss", action="store_true", help="also measure USS (unique memory; slower)")
    parser.add_argument(
        "--fail-above",
        metavar="KEY=VALUE,...",
        action="append",
        default=[],
        help="exit 1 when crossed: rss=SIZE (any worker process), total=SIZE (all workers), "
        "percent=N (workers' total of the effective limit), system=N (host or cgroup used %%)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    redis_url = _url_from(args.redis_url, REDIS_ENV, flag="--redis-url", schemes=REDIS_SCHEMES, example=REDIS_EXAMPLE)
    postgres_url = _url_from(
        args.postgres_url, POSTGRES_ENV, flag="--postgres-url", schemes=POSTGRES_SCHEMES, example=POSTGRES_EXAMPLE
    )
    report = collect_report(
        workers_pattern=args.workers,
        uss=args.uss,
        redis_url=redis_url,
        postgres_url=postgres_url,
        fail_above=args.fail_above,
    )
    print(render_json(report) if args.format == "json" else render_text(report))
    return EXIT_THRESHOLD if report.crossed else EXIT_OK


# -- schema ----------------------------------------------------------------------------------------------------------


def _obj(properties: dict, *, nullable: bool = False) -> dict:
    schema = {
        "type": ["object", "null"] if nullable else "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return schema


_INT = {"type": "integer"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_ERROR = _STR_OR_NULL  # null when the source answered; otherwise why it did not

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "memguard report",
    **_obj(
        {
            "schema_version": {"const": SCHEMA_VERSION},
            "generated_at": _STR,
            "hostname": _STR,
            "status": {"enum": ["ok", "threshold_crossed"]},
            "system": _obj(
                {
                    "total_bytes": _INT_OR_NULL,
                    "available_bytes": _INT_OR_NULL,
                    "used_bytes": _INT_OR_NULL,
                    "used_percent": _NUM_OR_NULL,
                    "swap_total_bytes": _INT_OR_NULL,
                    "swap_used_bytes": _INT_OR_NULL,
                    "swap_percent": _NUM_OR_NULL,
                    "effective_limit_bytes": _INT_OR_NULL,
                    "limit_source": {"enum": ["cgroup", "host"]},
                    "cgroup": _obj(
                        {
                            "version": {"enum": [1, 2]},
                            "path": _STR,
                            "current_bytes": _INT_OR_NULL,
                            "limit_bytes": _INT_OR_NULL,
                            "peak_bytes": _INT_OR_NULL,
                            "oom_kill": _INT_OR_NULL,
                            "used_percent": _NUM_OR_NULL,
                        },
                        nullable=True,
                    ),
                    "error": _ERROR,
                }
            ),
            "workers": _obj(
                {
                    "pattern": _STR,
                    "limit_bytes": _INT_OR_NULL,
                    "uss_requested": {"type": "boolean"},
                    "processes": {
                        "type": "array",
                        "items": _obj(
                            {
                                "pid": _INT,
                                "ppid": _INT_OR_NULL,
                                "main_pid": _INT,
                                "role": {"enum": ["main", "child"]},
                                "name": _STR,
                                "cmdline": _STR,
                                "rss_bytes": _INT_OR_NULL,
                                "uss_bytes": _INT_OR_NULL,
                                "percent_of_limit": _NUM_OR_NULL,
                                "age_s": _NUM_OR_NULL,
                                "tasks_processed": _INT_OR_NULL,
                            }
                        ),
                    },
                    "total_rss_bytes": _INT,
                    "total_percent": _NUM_OR_NULL,
                    "error": _ERROR,
                }
            ),
            "redis": _obj(
                {
                    "url": _STR,
                    "error": _ERROR,
                    "used_memory_bytes": _INT_OR_NULL,
                    "used_memory_peak_bytes": _INT_OR_NULL,
                    "used_memory_rss_bytes": _INT_OR_NULL,
                    "fragmentation_ratio": _NUM_OR_NULL,
                    "maxmemory_bytes": _INT_OR_NULL,
                    "maxmemory_policy": _STR_OR_NULL,
                },
                nullable=True,
            ),
            "postgres": _obj(
                {
                    "url": _STR,
                    "error": _ERROR,
                    "database": _STR_OR_NULL,
                    "database_size_bytes": _INT_OR_NULL,
                    "tables": {
                        "type": "array",
                        "items": _obj(
                            {
                                "schema": _STR,
                                "name": _STR,
                                "total_bytes": _INT,
                                "table_bytes": _INT,
                                "indexes_bytes": _INT,
                                "rows_estimate": _INT_OR_NULL,
                            }
                        ),
                    },
                },
                nullable=True,
            ),
            "thresholds": {
                "type": "array",
                "items": _obj(
                    {
                        "key": {"enum": ["rss", "total", "percent", "system"]},
                        "limit": {"type": "number"},
                        "value": _NUM_OR_NULL,
                        "crossed": {"type": "boolean"},
                        "message": _STR,
                    }
                ),
            },
        }
    ),
}
