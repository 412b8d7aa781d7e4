"""Repository-level pytest configuration.

The repository root is on ``sys.path`` (rootdir conftest), so ``fixtures`` — the real sample workloads and Celery
apps — import as a package from the tests, from worker subprocesses started in this directory, and from the demo.
"""
