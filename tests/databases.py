"""Tests that look at database files directly: a query on a file, and a workspace
whose database is replaced by a fixture another release wrote."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path


def query(path: Path, sql: str) -> list[tuple]:
    """The rows of ``sql`` on the database file at ``path``, through a connection of
    its own (closed after)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def replace_database(workspace: Path, source: Path) -> Path:
    """The workspace's database replaced by a copy of ``source`` (its WAL and SHM
    files gone with it); the copy's path."""
    db = workspace / "listkit.db"
    for name in ("listkit.db-wal", "listkit.db-shm"):
        (workspace / name).unlink(missing_ok=True)
    shutil.copyfile(source, db)
    return db
