"""The report's Redis section: ``INFO memory`` as numbers, via redis-py.

Why parse into fields: the broker's memory is part of a Celery deployment's budget (queued messages and results
live there), and ``maxmemory`` with its eviction policy decides whether a full Redis drops results or refuses
writes. A Redis that is down, or refuses the credentials, becomes an ``error`` line in this section; the rest of
the report still prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from .usage import redact_url, scrub

REDIS_SCHEMES = ("redis", "rediss", "unix")
REDIS_EXAMPLE = "redis://[:PASSWORD@]HOST:6379/0"
_TIMEOUT_S = 3.0


@dataclass
class RedisSection:
    url: str  # redacted
    error: str | None = None
    used_memory_bytes: int | None = None
    used_memory_peak_bytes: int | None = None
    used_memory_rss_bytes: int | None = None
    fragmentation_ratio: float | None = None
    maxmemory_bytes: int | None = None  # None: no limit (Redis reports 0)
    maxmemory_policy: str | None = None


def _int(info: dict, key: str) -> int | None:
    try:
        return int(info[key])
    except (KeyError, TypeError, ValueError):
        return None


def parse_info_memory(info: dict) -> dict:
    """The fields we report, from the dict redis-py returns for ``INFO memory``."""
    try:
        ratio = round(float(info["mem_fragmentation_ratio"]), 2)
    except (KeyError, TypeError, ValueError):
        ratio = None
    maxmemory = _int(info, "maxmemory")
    return {
        "used_memory_bytes": _int(info, "used_memory"),
        "used_memory_peak_bytes": _int(info, "used_memory_peak"),
        "used_memory_rss_bytes": _int(info, "used_memory_rss"),
        "fragmentation_ratio": ratio,
        "maxmemory_bytes": maxmemory or None,
        "maxmemory_policy": info.get("maxmemory_policy"),
    }


def collect_redis(url: str) -> RedisSection:
    """Connect, read ``INFO memory``, close. Never raises: a failure is described in ``error``."""
    section = RedisSection(url=redact_url(url))
    try:
        import redis
    except ImportError:
        section.error = "redis-py is not installed; install it with: pip install 'pytest-memguard[redis]'"
        return section
    client = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S)
        info = client.info("memory")
    except redis.AuthenticationError as exc:
        section.error = f"bad credentials: {scrub(str(exc), url)}"
    except redis.ConnectionError as exc:
        section.error = f"cannot connect: {scrub(str(exc), url)}"
    except redis.RedisError as exc:
        text = scrub(str(exc), url)
        kind = "bad credentials" if "AUTH" in text.upper() or "NOAUTH" in text.upper() else "error"
        section.error = f"{kind}: {text}"
    except ValueError as exc:  # from_url rejects e.g. an unknown db number
        section.error = f"bad URL: {scrub(str(exc), url)}"
    else:
        for key, value in parse_info_memory(info).items():
            setattr(section, key, value)
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
    return section
