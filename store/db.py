"""Connections and migrations of the PostgreSQL store.

Migrations are plain versioned SQL files ``store/migrations/NNNN_name.sql``,
applied in order, each in its own transaction, and recorded in
``schema_migrations``; an advisory lock lets several processes (the pipeline's
sink, the API, ``traffic platform up``) migrate at once safely.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from schemas.exceptions import TrafficError

__all__ = ["MIGRATIONS_DIR", "StoreError", "connect", "ensure_ready", "migrate", "migrations", "schema_version"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 180_018  # pg_advisory_lock key of the store's migrations


class StoreError(TrafficError):
    """The store cannot be reached or used."""


def migrations() -> list[tuple[int, Path]]:
    """(version, file) of every migration, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path))
    return found


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """A connection, or a one-line :class:`StoreError` naming where it failed."""
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        where = " ".join(part for part in dsn.split() if part.split("=")[0] in ("host", "port", "dbname"))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"the store at {where} cannot be reached ({first}); "
                         "is it running? `traffic platform up postgres`") from None


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations not applied yet; return their versions."""
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.commit()
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        conn.commit()
        for version, path in migrations():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name))
            applied.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        conn.commit()
    return applied


def schema_version(conn: psycopg.Connection) -> int:
    """The newest applied migration (0 when none)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def ensure_ready(dsn: str) -> int:
    """Connect and bring the schema up to date before a job writes (a one-line StoreError if the store is down)."""
    with connect(dsn) as conn:
        migrate(conn)
        return schema_version(conn)
