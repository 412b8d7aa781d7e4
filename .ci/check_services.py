"""Fail loudly when a service the test suite needs does not answer (CI must not silently skip its tests)."""

from __future__ import annotations

import socket
import sys

SERVICES = {
    "Redis": ("127.0.0.1", 6379, b"PING\r\n", b"+PONG"),
    "RabbitMQ (AMQP)": ("127.0.0.1", 5672, b"AMQP\x00\x00\x09\x01", b"\x01\x00\x00"),
    "PostgreSQL": ("127.0.0.1", 5432, None, None),
}


def check(name: str, host: str, port: int, send: bytes | None, expect: bytes | None) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            if send is None:
                return None
            sock.settimeout(5)
            sock.sendall(send)
            reply = sock.recv(64)
    except OSError as exc:
        return f"{name} at {host}:{port} does not answer: {exc}"
    if not reply.startswith(expect):
        return f"{name} at {host}:{port} answered unexpectedly: {reply[:20]!r}"
    return None


def main() -> int:
    problems = [p for p in (check(n, *args) for n, args in SERVICES.items()) if p]
    for name in SERVICES:
        if not any(p.startswith(name) for p in problems):
            print(f"  {name}: ok")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
