"""The report's PostgreSQL section: database size and the largest tables, via psycopg 3.

Why: the seed's report listed them because task results and documents pile up in the database as well as in
worker memory. Queries take their parameters through psycopg (no string-built SQL), the user and database come
from the URL (nothing hard-coded), and the URL is echoed with its password redacted. A server that is down,
refuses the credentials, or a missing psycopg becomes an ``error`` line in this section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .usage import redact_url, scrub

POSTGRES_SCHEMES = ("postgresql", "postgres")
POSTGRES_EXAMPLE = "postgresql://USER[:PASSWORD]@HOST:5432/DATABASE"
LARGEST_TABLES = 10
_CONNECT_TIMEOUT_S = 3

_DATABASE_SQL = "SELECT current_database(), pg_database_size(current_database())"

# Ordinary, partitioned tables and materialized views outside the system schemas; total = heap + indexes + TOAST.
_TABLES_SQL = """
SELECT n.nspname, c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid),
       pg_indexes_size(c.oid), c.reltuples::bigint
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%(kinds)s)
  AND n.nspname <> ALL(%(system_schemas)s)
  AND n.nspname NOT LIKE %(toast_like)s
ORDER BY pg_total_relation_size(c.oid) DESC, n.nspname, c.relname
LIMIT %(limit)s
"""


@dataclass
class TableSize:
    schema: str
    name: str
    total_bytes: int  # pg_total_relation_size: heap + indexes + TOAST
    table_bytes: int  # pg_relation_size: the main heap fork
    indexes_bytes: int
    rows_estimate: int | None  # pg_class.reltuples; None before the first ANALYZE/VACUUM (-1)


@dataclass
class PostgresSection:
    url: str  # redacted
    error: str | None = None
    database: str | None = None
    database_size_bytes: int | None = None
    tables: list[TableSize] = field(default_factory=list)


def collect_postgres(url: str, *, limit: int = LARGEST_TABLES) -> PostgresSection:
    """Connect read-only, read the sizes, close. Never raises: a failure is described in ``error``."""
    section = PostgresSection(url=redact_url(url))
    try:
        import psycopg
    except ImportError:
        section.error = "psycopg is not installed; install it with: pip install 'pytest-memguard[postgres]'"
        return section
    try:
        with psycopg.connect(url, connect_timeout=_CONNECT_TIMEOUT_S, autocommit=True) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                cur.execute(_DATABASE_SQL)
                section.database, section.database_size_bytes = cur.fetchone()
                cur.execute(
                    _TABLES_SQL,
                    {
                        "kinds": ["r", "p", "m"],
                        "system_schemas": ["pg_catalog", "information_schema"],
                        "toast_like": "pg_toast%",
                        "limit": limit,
                    },
                )
                for schema, name, total, table, indexes, rows in cur.fetchall():
                    section.tables.append(
                        TableSize(
                            schema=schema,
                            name=name,
                            total_bytes=int(total),
                            table_bytes=int(table),
                            indexes_bytes=int(indexes),
                            rows_estimate=int(rows) if rows is not None and rows >= 0 else None,
                        )
                    )
    except psycopg.OperationalError as exc:
        text = scrub(str(exc), url)
        lowered = text.lower()
        bad_role = "role" in lowered and "does not exist" in lowered
        if "authentication" in lowered or "password" in lowered or bad_role:
            section.error = f"bad credentials: {text}"
        else:
            section.error = f"cannot connect: {text}"
    except psycopg.Error as exc:
        section.error = f"query failed: {scrub(str(exc), url)}"
    except Exception as exc:  # e.g. ProgrammingError for an option psycopg rejects in the URL
        section.error = f"cannot use this URL: {scrub(str(exc), url)}"
    return section
