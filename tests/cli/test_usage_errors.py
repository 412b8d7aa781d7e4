"""Every bad argument gets one line on stderr naming what was wrong and how to fix it, and exit status 2."""

from __future__ import annotations

import json

import pytest

from pytest_memguard.cli import SUBCOMMANDS, build_parser, main

from .conftest import run_cli

CASES = [
    # (argv, words the one line must contain)
    (["report", "--format", "xml"], ["--format", "invalid choice", "'xml'", "text", "json"]),
    (["report", "--redis-url", "http://127.0.0.1:6379"], ["--redis-url", "must start with", "redis://"]),
    (["report", "--redis-url", "redis://127.0.0.1:notaport/0"], ["--redis-url", "malformed URL", "redis://"]),
    (["report", "--redis-url", "redis:///0"], ["--redis-url", "names no host"]),
    (["report", "--postgres-url", "127.0.0.1:5432/test"], ["--postgres-url", "postgresql://"]),
    (["report", "--postgres-url", "postgresql://u:pw@[::1/test"], ["--postgres-url", "malformed URL"]),
    (["report", "--fail-above", "swap=1GB"], ["--fail-above", "unknown key 'swap'", "rss=SIZE", "percent=N"]),
    (["report", "--fail-above", "rss"], ["--fail-above", "'rss'", "KEY=VALUE"]),
    (["report", "--fail-above", "rss=3XB"], ["--fail-above rss", "unknown unit 'XB'"]),
    (["report", "--fail-above", "rss=-1GB"], ["--fail-above rss", "cannot read '-1GB'"]),
    (["report", "--fail-above", "percent=150"], ["--fail-above", "percent=150", "between 0 and 100"]),
    (["report", "--fail-above", "percent=lots"], ["--fail-above", "not a percentage"]),
    (["report", "--fail-above", "rss=1GB", "--fail-above", "rss=2GB"], ["rss is given twice"]),
    (["report", "--workers", "celery(worker"], ["--workers", "not a valid regular expression"]),
    (["report", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["watch", "-1"], ["INTERVAL", "positive number of seconds", "'-1'"]),
    (["watch", "0"], ["INTERVAL", "positive"]),
    (["watch", "fast"], ["INTERVAL", "expected a number of seconds", "'fast'"]),
    (["watch", "nan"], ["INTERVAL", "positive"]),
    (["watch", "--duration", "-2"], ["--duration", "positive"]),
    (["watch", "--pid", "0"], ["--pid", "positive whole number"]),
    (["watch", "--pid", "abc"], ["--pid", "expected a whole number"]),
    (["watch", "--pid", "1", "--pattern", "celery"], ["--pattern", "not allowed with argument --pid"]),
    (["watch", "--pattern", "[celery"], ["--pattern", "not a valid regular expression"]),
    (["html"], ["required", "RESULTS.json"]),
    (["frobnicate"], ["invalid choice", "'frobnicate'", "report"]),
    ([], ["choose a command", "report, watch, html"]),
]


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_argument_is_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    assert line.startswith(f"memguard {command}: error: " if command else "memguard: error: ")
    for word in words:
        assert word in line


def test_malformed_url_from_the_environment_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("MEMGUARD_POSTGRES_URL", "mysql://db/test")
    assert main(["report"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "MEMGUARD_POSTGRES_URL (environment)" in line
    assert "postgresql://" in line


def test_malformed_url_with_a_password_is_redacted_in_the_error(capsys):
    assert main(["report", "--redis-url", "http://user:topsecret@127.0.0.1:6379"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "topsecret" not in line
    assert "user:***@" in line


def test_watch_of_a_pid_that_does_not_exist(capsys):
    pid = 2**22 + 12345  # above the default pid_max: never a live process
    assert main(["watch", "--pid", str(pid), "--once"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--pid {pid}: no such process" in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["not valid JSON", "line 1 column 2"]),
        ("[]", ["top level", "expected an object"]),
        ('{"version": 2, "tests": []}', ["version", "expected 1"]),
        ('{"version": 1}', ["neither 'tests' nor 'tasks'"]),
        ('{"version": 1, "kind": "memguard-other"}', ["kind", "memguard-baseline"]),
        ('{"version": 1, "tests": [{"peak_mb": 1}]}', ["tests[0].nodeid", "missing"]),
        ('{"version": 1, "tests": [{"nodeid": "t", "peak_mb": "12MB"}]}', ["tests[0].peak_mb", "expected a number"]),
        ('{"version": 1, "tests": [{"nodeid": "t", "budget": {"delta_mb": true}}]}', ["tests[0].budget.delta_mb"]),
        (
            '{"version": 1, "tasks": [{"task_name": "t", "checkpoints": [{"label": "a", "time_s": 0}]}]}',
            ["tasks[0].checkpoints[0].rss_mb", "missing"],
        ),
        ('{"version": 1, "kind": "memguard-baseline", "entries": []}', ["'entries' must be an object"]),
    ],
)
def test_malformed_results_file_is_one_line_and_exit_2(tmp_path, capsys, content, words):
    path = tmp_path / "results.json"
    path.write_text(content)
    assert main(["html", str(path), "-o", str(tmp_path / "out.html")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"memguard html: error: {path}: ")
    for word in words:
        assert word in line
    assert not (tmp_path / "out.html").exists()


def test_missing_results_file_and_unwritable_output(tmp_path, capsys):
    assert main(["html", str(tmp_path / "nope.json")]) == 2
    assert "cannot read: No such file or directory" in one_line(capsys.readouterr().err)
    good = tmp_path / "r.json"
    good.write_text(json.dumps({"version": 1, "tests": []}))
    assert main(["html", str(good), "-o", str(tmp_path / "no-dir" / "x.html")]) == 2
    assert "cannot write" in one_line(capsys.readouterr().err)


def test_as_a_separate_process_there_is_no_traceback_either():
    result = run_cli("watch", "-5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        "memguard watch: error: argument INTERVAL: must be a positive number of seconds, got '-5' "
        "(see 'memguard watch --help')"
    )


def test_help_exits_0_and_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_a_subcommand_is_one_module_with_add_parser_and_run():
    """The registry contract the next subcommand (``compare``) relies on."""
    from importlib import import_module

    parser = build_parser()
    for name in SUBCOMMANDS:
        module = import_module(f"pytest_memguard.cli.{name}")
        assert callable(module.add_parser) and callable(module.run)
    assert parser.parse_args(["report"]).run is import_module("pytest_memguard.cli.report").run
