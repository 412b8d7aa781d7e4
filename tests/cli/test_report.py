"""``memguard report`` against a real prefork worker, the real Redis and the real PostgreSQL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from pytest_memguard.cli import main
from pytest_memguard.cli.report import REPORT_SCHEMA
from pytest_memguard.runtime.cgroup import current_cgroup_memory, effective_limit_bytes
from tests.services import require_postgres, require_redis

from .conftest import run_cli

# -- a small JSON-schema checker (the subset REPORT_SCHEMA uses), so the test needs no extra dependency ----------

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _is(value, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def schema_errors(value, schema: dict, where: str = "$") -> list[str]:
    """Every place where ``value`` breaks ``schema`` (type, const, enum, required, additionalProperties, items)."""
    errors = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']!r}")
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, k) for k in kinds):
            return [*errors, f"{where}: {value!r} is not {kinds}"]
    if isinstance(value, dict) and "properties" in schema:
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        for key, item in value.items():
            if key in schema["properties"]:
                errors += schema_errors(item, schema["properties"][key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def report_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["report", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- workers -----------------------------------------------------------------------------------------------------


def test_lists_the_real_worker_main_process_and_its_pool_children(capsys, celery_worker):
    code, data = report_json(capsys, "--workers", celery_worker.name, "--uss")
    assert code == 0
    assert schema_errors(data, REPORT_SCHEMA) == []
    procs = data["workers"]["processes"]
    assert [(p["pid"], p["role"]) for p in procs] == [(celery_worker.main_pid, "main")] + [
        (pid, "child") for pid in celery_worker.child_pids
    ]
    limit = effective_limit_bytes()
    assert data["workers"]["limit_bytes"] == limit
    for p in procs:
        assert p["main_pid"] == celery_worker.main_pid
        assert p["rss_bytes"] > 10 * 2**20  # a Python interpreter with Celery imported
        assert 0 < p["uss_bytes"] <= p["rss_bytes"]
        assert p["percent_of_limit"] == round(100 * p["rss_bytes"] / limit, 1)
        assert 0 <= p["age_s"] < 600
        assert p["tasks_processed"] is None
        assert celery_worker.name in p["cmdline"]
    assert [p["ppid"] for p in procs[1:]] == [celery_worker.main_pid] * 2
    assert data["workers"]["total_rss_bytes"] == sum(p["rss_bytes"] for p in procs)
    # The figures are the kernel's: RSS read again now is within a few MB of the reported one.
    now = psutil.Process(celery_worker.main_pid).memory_info().rss
    assert abs(now - procs[0]["rss_bytes"]) < 8 * 2**20


def test_text_report_shows_each_worker_process_and_the_totals(capsys, celery_worker):
    assert main(["report", "--workers", celery_worker.name]) == 0
    out = capsys.readouterr().out
    assert "Celery workers" in out
    assert f"{celery_worker.main_pid}  main" in out
    for pid in celery_worker.child_pids:
        assert f"└ {pid}  child" in out
    assert "total: 1 worker(s), 3 processes" in out
    assert "System" in out and "effective limit" in out


def test_default_pattern_finds_celery_workers_and_not_the_test_process(capsys, celery_worker):
    code, data = report_json(capsys)
    pids = {p["pid"] for p in data["workers"]["processes"]}
    assert {celery_worker.main_pid, *celery_worker.child_pids} <= pids
    assert not {p.pid for p in psutil.Process().parents()} & pids


def test_a_password_in_a_worker_command_line_is_never_printed(capsys, tmp_path):
    marker = f"memguard-secret-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", "import time; time.sleep(30)", marker, "-b", "redis://:hunter2pw@broker:6379/0"]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 10
        while marker not in " ".join(psutil.Process(proc.pid).cmdline()) and time.monotonic() < deadline:
            time.sleep(0.02)
        code, data = report_json(capsys, "--workers", marker)
        assert main(["report", "--workers", marker]) == 0
        text = capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert [p["pid"] for p in data["workers"]["processes"]] == [proc.pid]
    assert "redis://:***@broker:6379/0" in data["workers"]["processes"][0]["cmdline"]
    assert f"{proc.pid}: " in text  # the command line is shown (cut at 100 characters)
    assert "hunter2pw" not in json.dumps(data) + text


def test_no_matching_worker_is_reported_as_none_found(capsys):
    assert main(["report", "--workers", f"no-such-worker-{uuid.uuid4().hex}"]) == 0
    assert "no worker processes found" in capsys.readouterr().out


# -- thresholds --------------------------------------------------------------------------------------------------


def test_fail_above_rss_crossed_by_the_real_worker_exits_1_and_names_it(celery_worker):
    result = run_cli("report", "--workers", celery_worker.name, "--fail-above", "rss=1MB")
    assert result.returncode == 1, result.stderr
    line = next(line for line in result.stdout.splitlines() if "CROSSED" in line)
    assert "rss=1.0 MB" in line
    assert f"pid {celery_worker.main_pid} (main)" in line


def test_fail_above_every_key_not_crossed_exits_0(capsys, celery_worker):
    code, data = report_json(
        capsys, "--workers", celery_worker.name, "--fail-above", "rss=100GB,total=1TB", "--fail-above", "percent=100"
    )
    assert code == 0
    assert data["status"] == "ok"
    assert [(t["key"], t["crossed"]) for t in data["thresholds"]] == [
        ("rss", False),
        ("total", False),
        ("percent", False),
    ]
    assert data["thresholds"][1]["value"] == data["workers"]["total_rss_bytes"]


def test_fail_above_total_and_percent_crossed(capsys, celery_worker):
    code, data = report_json(capsys, "--workers", celery_worker.name, "--fail-above", "total=10MB,percent=0")
    assert code == 1
    assert data["status"] == "threshold_crossed"
    assert all(t["crossed"] for t in data["thresholds"])
    assert "worker total RSS" in data["thresholds"][0]["message"]


def test_fail_above_system_uses_host_or_cgroup_percent(capsys):
    code, data = report_json(capsys, "--workers", "no-such-worker-x", "--fail-above", "system=0")
    assert code == 1
    cgroup = data["system"]["cgroup"]
    candidates = [data["system"]["used_percent"], cgroup["used_percent"] if cgroup else None]
    assert data["thresholds"][0]["value"] == max(v for v in candidates if v is not None)
    assert "system memory used" in data["thresholds"][0]["message"]


# -- system ------------------------------------------------------------------------------------------------------


def test_system_section_matches_psutil_and_the_cgroup_files(capsys):
    before = current_cgroup_memory()
    code, data = report_json(capsys, "--workers", "no-such-worker-x")
    system = data["system"]
    assert system["total_bytes"] == psutil.virtual_memory().total
    assert system["swap_total_bytes"] == psutil.swap_memory().total
    assert system["effective_limit_bytes"] == effective_limit_bytes()
    after = current_cgroup_memory()
    if after is None:
        assert system["cgroup"] is None
    else:
        cg = system["cgroup"]
        assert (cg["version"], cg["path"], cg["limit_bytes"]) == (after.version, after.path, after.limit_bytes)
        if after.oom_kill is not None:  # older v1 kernels do not count OOM kills
            assert before.oom_kill <= cg["oom_kill"] <= after.oom_kill
        # Other processes share the cgroup, so usage moves; the peak only rises, which pins the report between.
        if after.peak_bytes is not None:
            assert before.peak_bytes <= cg["peak_bytes"] <= after.peak_bytes
            assert 0 < cg["current_bytes"] <= after.peak_bytes


# -- Redis -------------------------------------------------------------------------------------------------------


def test_redis_section_reads_info_memory(capsys):
    url = require_redis()
    import redis

    client = redis.Redis.from_url(url)
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    maxmemory = int(client.config_get("maxmemory")["maxmemory"])
    client.close()
    code, data = report_json(capsys, "--workers", "no-such-worker-x", "--redis-url", url)
    assert code == 0
    assert schema_errors(data, REPORT_SCHEMA) == []
    r = data["redis"]
    assert r["error"] is None
    assert r["url"] == url
    assert r["used_memory_bytes"] > 0
    assert r["used_memory_peak_bytes"] >= r["used_memory_bytes"] * 0.5
    assert r["used_memory_rss_bytes"] > 0
    assert r["fragmentation_ratio"] > 0
    assert r["maxmemory_policy"] == policy
    assert r["maxmemory_bytes"] == (maxmemory or None)


def test_redis_url_from_the_environment(capsys, monkeypatch):
    url = require_redis()
    monkeypatch.setenv("MEMGUARD_REDIS_URL", url)
    assert main(["report", "--workers", "no-such-worker-x"]) == 0
    out = capsys.readouterr().out
    assert f"Redis ({url})" in out
    assert "fragmentation ratio" in out


def test_redis_refused_is_said_in_its_section_and_the_rest_prints(celery_worker):
    port = free_port()
    result = run_cli("report", "--workers", celery_worker.name, "--redis-url", f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split(f"Redis (redis://127.0.0.1:{port}/0)")[1]
    assert "unavailable: cannot connect" in section.splitlines()[1]
    assert f"{celery_worker.main_pid}  main" in result.stdout  # the rest still printed
    assert "Traceback" not in result.stderr


def test_redis_bad_credentials_are_said_and_the_password_never_printed(capsys):
    url = require_redis()
    secret = "wrong-" + uuid.uuid4().hex
    # A password alone is ignored by a Redis without one (redis-py drops that AUTH error); an unknown ACL user is not.
    bad = url.replace("redis://", f"redis://memguard-nobody:{secret}@")
    assert main(["report", "--workers", "no-such-worker-x", "--redis-url", bad]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert "redis://memguard-nobody:***@127.0.0.1:6379/0" in out
    assert "unavailable: bad credentials" in out


def test_redis_py_missing_is_said_in_its_section(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # a fault we cannot cause otherwise: the package is installed
    code, data = report_json(capsys, "--workers", "no-such-worker-x", "--redis-url", "redis://127.0.0.1:6379/0")
    assert code == 0
    assert "pip install 'pytest-memguard[redis]'" in data["redis"]["error"]


# -- PostgreSQL --------------------------------------------------------------------------------------------------


@pytest.fixture
def big_table():
    """A uniquely named table of ~24 MB (inline 1000-byte rows, below the TOAST threshold), dropped afterwards."""
    url = require_postgres()
    import psycopg
    from psycopg import sql

    name = f"memguard_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, payload text)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, repeat(md5(g::text), 31) || 'abcdefgh' FROM generate_series(1, %s) g"
            ).format(sql.Identifier(name)),
            (20000,),
        )
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
        try:
            yield url, name
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_postgres_lists_a_real_table_among_the_largest_with_its_size(capsys, big_table):
    url, name = big_table
    import psycopg

    code, data = report_json(capsys, "--workers", "no-such-worker-x", "--postgres-url", url)
    with psycopg.connect(url) as conn:
        total, table, indexes = conn.execute(
            "SELECT pg_total_relation_size(%(t)s::regclass), pg_relation_size(%(t)s::regclass), "
            "pg_indexes_size(%(t)s::regclass)",
            {"t": name},
        ).fetchone()
    assert code == 0
    assert schema_errors(data, REPORT_SCHEMA) == []
    pg = data["postgres"]
    assert pg["error"] is None
    assert pg["database"] == "test"
    assert pg["database_size_bytes"] >= total  # other sessions may write to the same database meanwhile
    assert len(pg["tables"]) <= 10
    ours = next(t for t in pg["tables"] if t["name"] == name)
    assert ours["schema"] == "public"
    assert (ours["total_bytes"], ours["table_bytes"], ours["indexes_bytes"]) == (total, table, indexes)
    assert ours["total_bytes"] >= 20000 * 1000  # 20 000 rows of 1000 bytes, stored inline
    assert ours["rows_estimate"] == 20000
    sizes = [t["total_bytes"] for t in pg["tables"]]
    assert sizes == sorted(sizes, reverse=True)


def test_postgres_text_section_shows_the_table_and_redacts_the_password(capsys, big_table):
    url, name = big_table
    secret = "pw-" + uuid.uuid4().hex  # trust auth accepts any password: the connection succeeds
    with_password = url.replace("@", f":{secret}@", 1)
    assert main(["report", "--workers", "no-such-worker-x", "--postgres-url", with_password]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert ":***@127.0.0.1:5432/test" in out
    assert f"public.{name}" in out
    assert "database test:" in out


def test_postgres_bad_role_is_said_in_its_section_and_the_rest_prints(celery_worker):
    require_postgres()
    url = f"postgresql://no_such_role_{uuid.uuid4().hex[:8]}:hunter2secret@127.0.0.1:5432/test"
    result = run_cli("report", "--workers", celery_worker.name, "--postgres-url", url)
    assert result.returncode == 0, result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
    section = result.stdout.split("PostgreSQL (")[1].splitlines()
    assert section[1].startswith("  unavailable: bad credentials")
    assert f"{celery_worker.main_pid}  main" in result.stdout


def test_postgres_refused_port_is_said_in_its_section(capsys):
    port = free_port()
    code, data = report_json(capsys, "--workers", "x-none", "--postgres-url", f"postgresql://u@127.0.0.1:{port}/db")
    assert code == 0
    assert data["postgres"]["error"].startswith("cannot connect")
    assert data["system"]["total_bytes"] > 0


def test_psycopg_missing_is_said_in_its_section_and_the_rest_prints(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # a fault we cannot cause otherwise: the package is installed
    assert main(["report", "--workers", "x-none", "--postgres-url", "postgresql://u@127.0.0.1/test"]) == 0
    out = capsys.readouterr().out
    assert "unavailable: psycopg is not installed" in out
    assert "System" in out


# -- the JSON schema ---------------------------------------------------------------------------------------------


def test_full_report_validates_against_the_schema(capsys, celery_worker):
    redis_url, pg_url = require_redis(), require_postgres()
    code, data = report_json(
        capsys,
        "--workers", celery_worker.name, "--uss", "--redis-url", redis_url, "--postgres-url", pg_url,
        "--fail-above", "rss=1MB,system=99",
    )  # fmt: skip
    assert code == 1
    assert schema_errors(data, REPORT_SCHEMA) == []
    try:  # not a dependency: where it is installed, the reference validator must agree with ours
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    jsonschema.validate(data, REPORT_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_schema_checker_catches_a_wrong_report():
    assert schema_errors({"schema_version": 1}, REPORT_SCHEMA)
    broken = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert schema_errors({"a": True}, broken) == ["$.a: True is not ['integer']"]
