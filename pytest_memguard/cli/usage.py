"""Usage errors and the argument readers every subcommand shares.

Why one module: the command is meant for cron and CI, where a wrong flag must produce one line that says what was
wrong and how to fix it, and exit code 2 — never argparse's two-line usage dump and never a traceback. Every
reader here raises :class:`UsageError` (or argparse's ``ArgumentTypeError``, which :class:`CliParser` turns into a
``UsageError``), and :func:`pytest_memguard.cli.main` prints it as a single line.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

EXIT_OK = 0
EXIT_THRESHOLD = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line mistake. The message is one line naming the argument and the fix; exit status 2."""

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the source said
        self.prog = prog  # the (sub)command it concerns, e.g. "memguard report"; None: the caller knows


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting.

    Subparsers made from it use the same class (argparse's default), so one override covers every subcommand.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)


def positive_seconds(text: str) -> float:
    """An argparse ``type=`` for a number of seconds > 0 (a zero or negative interval would spin)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds such as 5 or 0.5, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type=`` for a positive whole number such as a pid."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def compiled_regex(text: str) -> re.Pattern[str]:
    """An argparse ``type=`` that compiles a regular expression, so a typo fails at once, not mid-report."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression ({exc})") from None


_SECRET_QUERY_KEYS = {"password", "pass", "passwd", "sslpassword"}


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in the userinfo and in ``?password=``), for echoing.

    Reports end up in logs and CI output; a connection URL must never carry its secret there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` from ``text`` (an error message from a driver may quote its input)."""
    try:
        parts = urlsplit(url)
        secrets = [parts.password] if parts.password else []
        secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS and v]
    except ValueError:
        secrets = []
    for secret in secrets:
        text = text.replace(secret, "***")
    return " ".join(text.split())


def check_url(url: str, *, schemes: tuple[str, ...], what: str, example: str) -> str:
    """Return ``url`` if it is a well-formed URL with one of ``schemes`` and a host; else raise UsageError.

    Checked before any connection is tried, so a typo is a usage error (exit 2) rather than a "source down" line.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise UsageError(f"{what}: malformed URL {redact_url(url)!r} ({exc}); write it like {example}") from None
    if parts.scheme not in schemes:
        raise UsageError(
            f"{what}: URL {redact_url(url)!r} must start with {' or '.join(s + '://' for s in schemes)}; "
            f"write it like {example}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise UsageError(f"{what}: URL {redact_url(url)!r} names no host; write it like {example}")
    return url


_URL_PASSWORD_RE = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)@")


def redact_secrets(text: str) -> str:
    """``text`` (e.g. a worker's command line, which may carry ``-b redis://:secret@host``) with every URL
    password replaced by ``***``."""
    return _URL_PASSWORD_RE.sub(lambda m: f"{m.group('head')}***@", text)
