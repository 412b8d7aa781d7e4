"""The ``memguard`` command: ``report``, ``watch`` and ``html``.

Why a registry of modules: each subcommand is one module exposing ``add_parser(subparsers)`` (which sets the
``run`` default) and ``run(args) -> int``. Adding a subcommand is writing that module and naming it in
:data:`SUBCOMMANDS`; nothing else changes. Modules import their heavy dependencies (rich, redis, psycopg) inside
functions, so ``memguard html`` does not pay for rich and a missing extra only affects the section that needs it.

Exit status everywhere: 0 fine, 1 the command's own failure condition (a crossed ``--fail-above``), 2 a usage
error — printed as one line on stderr naming the argument and the fix, never a traceback.

No pytest import anywhere in this package: the command runs in production containers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import import_module

from .usage import EXIT_USAGE, CliParser, UsageError

# Module names under pytest_memguard.cli, in the order ``memguard --help`` lists them.
SUBCOMMANDS: tuple[str, ...] = ("report", "watch", "html", "compare")

PROG = "memguard"


def build_parser() -> CliParser:
    """The full argument parser, one subparser per module in :data:`SUBCOMMANDS`."""
    parser = CliParser(
        prog=PROG,
        description="Memory of Celery workers, Redis, PostgreSQL and test runs, from the kernel's own figures.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for name in SUBCOMMANDS:
        import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``memguard`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    prefix = PROG
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "run", None) is None:
            raise UsageError(f"choose a command: {', '.join(SUBCOMMANDS)} (see '{PROG} --help')")
        prefix = f"{PROG} {args.command}"
        if extra:  # reported here rather than by argparse, so the message names the subcommand's help
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prefix} --help')")
        return int(args.run(args))
    except UsageError as exc:
        print(f"{exc.prog or prefix}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help exits through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        # `memguard report | head`: the reader left. Point stdout at /dev/null so the interpreter's final flush
        # does not raise again (the recipe from Python's signal documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]
