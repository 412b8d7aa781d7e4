"""Parsing and formatting of memory sizes.

Why one module: budgets, thresholds, Celery's ``worker_max_memory_per_child`` and the CLI all take sizes from users,
and a size read two different ways is a bug waiting to happen. "MB" means 2**20 bytes throughout, as in the seed
guide users know (and as ``ps``/``top`` mean it); ``MiB``, ``M`` and ``MB`` are synonyms. Decimal SI sizes
are not offered: one meaning per spelling beats a guess.
"""

from __future__ import annotations

import re

MB = 1 << 20
KB = 1 << 10
GB = 1 << 30

_UNIT_BYTES = {
    "": None,  # resolved by the caller's default unit
    "B": 1,
    "K": KB,
    "KB": KB,
    "KIB": KB,
    "M": MB,
    "MB": MB,
    "MIB": MB,
    "G": GB,
    "GB": GB,
    "GIB": GB,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


class SizeError(ValueError):
    """A size string that cannot be read; the message names the value and the accepted forms."""


def parse_size(value: str | int | float, default_unit: str = "MB", *, what: str = "size") -> int:
    """Return ``value`` in bytes.

    Accepts numbers (taken in ``default_unit``) and strings such as ``"24 MB"``, ``"1.5GiB"``, ``"512KiB"``,
    ``"4G"``, ``"4096M"``. Units are case-insensitive; MB, MiB and M all mean 2**20 bytes. Negative sizes and
    unknown units raise :class:`SizeError` with a message that says how to write the value instead.
    """
    default = _UNIT_BYTES.get(default_unit.upper())
    if default is None:
        raise SizeError(f"unknown default unit {default_unit!r}")
    if isinstance(value, bool):
        raise SizeError(f"{what}: expected a size such as 200, '200MB' or '1.5GiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or value != value:  # NaN check without math import
            raise SizeError(f"{what}: a size must be a non-negative number, got {value!r}")
        return int(round(value * default))
    if not isinstance(value, str):
        raise SizeError(f"{what}: expected a size such as 200, '200MB' or '1.5GiB', got {type(value).__name__}")
    match = _SIZE_RE.match(value)
    if not match:
        raise SizeError(
            f"{what}: cannot read {value!r} as a size; write a number with an optional unit, "
            "e.g. 200, '200MB', '1.5GiB', '512KiB' (MB means 2**20 bytes)"
        )
    number, unit = match.groups()
    unit_upper = unit.upper()
    if unit_upper not in _UNIT_BYTES:
        raise SizeError(f"{what}: unknown unit {unit!r} in {value!r}; use B, KB/KiB/K, MB/MiB/M, GB/GiB/G or TB/TiB/T")
    factor = _UNIT_BYTES[unit_upper] or default
    return int(round(float(number) * factor))


def parse_size_mb(value: str | int | float, *, what: str = "size") -> float:
    """Like :func:`parse_size` with MB as the default unit, returning MB (float)."""
    return parse_size(value, "MB", what=what) / MB


def to_mb(n_bytes: int | float | None) -> float | None:
    """Bytes to MB (2**20), rounded to 0.1 MB as the log lines show; ``None`` stays ``None`` (unknown)."""
    if n_bytes is None:
        return None
    return round(n_bytes / MB, 1)


def format_mb(mb: float | None, *, signed: bool = False) -> str:
    """Format MB the way the seed's log lines do: ``512.7MB``, ``+125.4MB``; unknown figures as ``?MB``."""
    if mb is None:
        return "?MB"
    return f"{mb:+.1f}MB" if signed else f"{mb:.1f}MB"


def format_bytes(n_bytes: int | float | None) -> str:
    """Human-readable size for reports: ``12.3 KB``, ``4.0 GB`` (binary units, as everywhere here)."""
    if n_bytes is None:
        return "?"
    value = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - loop always returns
