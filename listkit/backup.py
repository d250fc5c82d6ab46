"""A backup of the database: one consistent, private, checked copy, taken while
`listkit send` and `listkit serve` keep working.

The copy is made with SQLite's online backup API (``sqlite3.Connection.backup``)
in one step: one read transaction, so the copy is the database as of one
moment, and in WAL mode writers are never blocked by it (they append to the
WAL; the backup reads the snapshot it started with). ``VACUUM INTO`` would
give the same snapshot, compacted, but SQLite does not sync the file it writes
and it rebuilds every table and index; the backup API copies pages into a file
this module created, through a connection that commits it durably.

The rule: a restored copy never sends a message twice. A send running while
the copy is taken has rows ``sending`` that it may mark (in ``listkit.db-marks``,
beside the database, see ``listkit.send.marks``) and send after the snapshot:
the marks file cannot say which, as of the copy's moment. So the marks file is
not copied; instead every row the copy holds as ``sending`` is given the phase
``data`` in the copy (what a mark would at most have said), and the first send
after a restore records them as ``unknown`` (the user decides) instead of
sending them again.

The copy is written to a private temporary file beside DEST (mode 0600 from
its creation), checked with ``PRAGMA integrity_check``, synced, and only then
renamed to DEST: a failed backup leaves no half-written file under DEST's name,
and with ``force`` a good older backup is replaced only by a good newer one.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from listkit.db import BUSY_TIMEOUT_MS, describe_db_error
from listkit.errors import InputError, ListkitError
from listkit.files import PRIVATE


@dataclass
class Backup:
    """What a backup wrote: where, how big, and how many rows were in flight."""

    source: Path
    dest: Path
    size: int
    tables: int
    in_flight: int

    def summary(self) -> str:
        flight = (
            f"; {self.in_flight} messages a send had in flight are marked as possibly sent "
            "in the copy"
            if self.in_flight
            else ""
        )
        return (
            f"Backed up {self.source} to {self.dest}: {self.size:,} bytes, "
            f"{self.tables} tables, integrity ok{flight}."
        )


def backup_database(db: Database, source: Path, dest: Path, *, force: bool = False) -> Backup:
    """Copy the open database ``db`` (the file ``source``) to ``dest``; see the module."""
    if str(dest) == "-":
        raise InputError(
            "backup cannot write to standard output (-): SQLite writes the copy to a file; "
            "name a file, e.g. listkit backup backups/listkit.db"
        )
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"{dest} is a folder: name the backup file, e.g. {dest / 'listkit.db'}")
    if not dest.parent.is_dir():
        raise InputError(f"cannot write {dest}: the folder {dest.parent} does not exist")
    claimed = False
    if not force:
        # Claim the name first (exclusive create, private): a second backup, or a file
        # that appears meanwhile, is never overwritten.
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
        except FileExistsError:
            raise InputError(
                f"{dest} exists: name a new file, or pass --force to replace it"
            ) from None
        claimed = True
    # mkstemp creates the file with mode 0600; SQLite gives its -wal and -shm the same.
    fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    os.close(fd)
    try:
        in_flight, tables = _copy(db, Path(partial), dest)
        _fsync(partial)
        os.replace(partial, dest)
        claimed = False
        _fsync(dest.parent)
    except BaseException:
        for leftover in (partial, f"{partial}-wal", f"{partial}-shm"):
            Path(leftover).unlink(missing_ok=True)
        if claimed:
            os.unlink(dest)
        raise
    return Backup(source, dest, dest.stat().st_size, tables, in_flight)


def _copy(db: Database, partial: Path, dest: Path) -> tuple[int, int]:
    """Copy into ``partial`` (to become ``dest``), mark in-flight rows, check it;
    (rows marked, tables)."""
    copy = sqlite3.connect(str(partial), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        try:
            db.conn.backup(copy)  # pages=-1: the whole database in one step, one snapshot
        except sqlite3.Error as e:
            raise ListkitError(describe_db_error(dest, e)) from None
        copy.execute("PRAGMA synchronous = FULL")
        in_flight = 0
        if _has_table(copy, "deliveries"):
            in_flight = copy.execute(
                "UPDATE deliveries SET phase = 'data' WHERE state = 'sending' "
                "AND phase IS NOT 'data'"
            ).rowcount
        problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise ListkitError(
                f"the copy failed SQLite's integrity check ({'; '.join(problems[:3])}); "
                "nothing was kept: run `listkit backup` again, and if it fails again the "
                "database itself may be damaged"
            )
        tables = copy.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchone()[0]
    finally:
        copy.close()  # checkpoints the copy's WAL into it and removes its -wal and -shm
    return in_flight, tables


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name])
    return found.fetchone() is not None


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
