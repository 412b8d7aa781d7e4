"""Bad Celery settings are one clear line naming the setting and the fix (no traceback)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--memguard-celery-mode=both"], "*--memguard-celery-mode: unknown value 'both'; use one of eager, worker"),
        (["--memguard-celery-concurrency=0"], "*--memguard-celery-concurrency: must be > 0, got '0'"),
        (["--memguard-celery-broker=localhost"], "*--memguard-celery-broker: 'localhost' is not a URL; write e.g.*"),
        (["--memguard-celery-app=proj/app.py"], "*'proj/app.py' is not an app path; write it as 'pkg.module:app'*"),
    ],
)
def test_bad_option_is_a_usage_error(run, pytester, args, line):
    pytester.makepyfile("def test_x(): pass")
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-memguard: {line}"])
    assert "Traceback" not in result.stderr.str()


def test_app_path_that_does_not_import_errors_the_tests_that_need_it(run, pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_needs_celery(celery_run):
            pass

        @pytest.mark.celery_mode("sideways")
        def test_bad_marker():
            pass

        def test_plain():
            pass
        """
    )
    result = run("-rA", "--memguard-celery-app=nosuch.module:app")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_needs_celery*",
            "pytest-memguard: --memguard-celery-app: Celery app path 'nosuch.module:app': module 'nosuch.module' "
            "does not import (ModuleNotFoundError: *); check the name and that its folder is on sys.path*",
            "*ERROR at setup of test_bad_marker*",
            "pytest-memguard: test_*::test_bad_marker: @pytest.mark.celery_mode takes 'eager' and/or 'worker', "
            "got 'sideways'; write @pytest.mark.celery_mode(\"worker\")",
        ],
        consecutive=True,
    )
    assert "During handling" not in result.stdout.str()
