"""`listkit backup`: a private, checked copy that refuses to overwrite, and what
a restored copy does with the messages a send had in flight."""

from __future__ import annotations

import os
import stat

import pytest

from listkit.workspace import Workspace
from tests.databases import query
from tests.test_send import setup_campaign


def tables(path) -> int:
    sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    return query(path, sql)[0][0]


@pytest.fixture
def umask_zero():
    """A umask that would leave a new file readable by everyone."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_backup_is_a_private_checked_copy_with_a_one_line_summary(
    run, workspace, tmp_path, umask_zero
):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    dest = tmp_path / "nightly.db"
    result = run("backup", str(dest))
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert result.output == (
        f"Backed up {workspace / 'listkit.db'} to {dest}: {dest.stat().st_size:,} bytes, "
        f"{tables(dest)} tables, integrity ok.\n"
    )
    assert query(dest, "PRAGMA integrity_check") == [("ok",)]
    assert query(dest, "SELECT email FROM subscribers") == [("ann@example.com",)]
    # Nothing but the copy is left in its folder: no temporary, -wal or -shm file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nightly.db", "ws"]


def test_an_existing_file_is_kept_unless_force_is_given(run, workspace, tmp_path):
    run("lists", "create", "blog")
    dest = tmp_path / "old.db"
    dest.write_bytes(b"last week's backup")
    result = run("backup", str(dest), ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {dest} exists: name a new file, or pass --force to replace it\n"
    )
    assert dest.read_bytes() == b"last week's backup"
    run("backup", str(dest), "--force")
    assert query(dest, "SELECT slug FROM lists") == [("blog",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db", "ws"]


def test_standard_output_is_refused_with_the_reason(run):
    result = run("backup", "-", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: backup cannot write to standard output (-): SQLite writes the copy to a "
        "file; name a file, e.g. listkit backup backups/listkit.db\n"
    )


def test_the_database_itself_is_never_the_destination_even_with_force(run, workspace):
    db = workspace / "listkit.db"
    before = db.read_bytes()
    result = run("backup", str(db), "--force", ok=False)
    assert result.exit_code == 1
    assert result.output == f"Error: DEST {db} is this workspace's database: name another file\n"
    assert db.read_bytes() == before


def test_a_folder_or_a_missing_folder_is_named(run, tmp_path):
    result = run("backup", str(tmp_path), ok=False)
    assert result.output == (
        f"Error: {tmp_path} is a folder: name the backup file, e.g. {tmp_path / 'listkit.db'}\n"
    )
    result = run("backup", str(tmp_path / "nope" / "b.db"), ok=False)
    assert result.output == (
        f"Error: cannot write {tmp_path / 'nope' / 'b.db'}: the folder {tmp_path / 'nope'} "
        "does not exist\n"
    )


def test_a_restored_copy_never_resends_what_a_send_had_in_flight(run, workspace, tmp_path, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ["a@example.com", "b@example.com"])
    run("send", "t", "--yes")
    assert len(handler.messages) == 2
    # As a running send leaves it: b's row claimed (its mark may be written and its
    # content sent a moment after the copy is taken).
    ws = Workspace(workspace)
    with ws.db.conn:
        ws.db.execute(
            "UPDATE deliveries SET state = 'sending', phase = 'claimed', claimed_by = 'run1' "
            "WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = 'b@example.com')"
        )
    ws.close()
    dest = tmp_path / "b.db"
    result = run("backup", str(dest))
    assert result.output.endswith(
        "integrity ok; 1 messages a send had in flight are marked as possibly sent in the copy.\n"
    )
    # Restore: the copy replaces the database (no -wal, -shm or marks file beside it).
    for name in ("listkit.db", "listkit.db-wal", "listkit.db-shm", "listkit.db-marks"):
        (workspace / name).unlink(missing_ok=True)
    (workspace / "listkit.db").write_bytes(dest.read_bytes())
    result = run("send", "t", "--yes", ok=False)
    assert len(handler.messages) == 2  # nothing sent again
    assert "unknown" in result.output
    ws = Workspace(workspace)
    states = dict(
        ws.db.execute(
            "SELECT s.email, d.state FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
        ).fetchall()
    )
    ws.close()
    assert states == {"a@example.com": "sent", "b@example.com": "unknown"}


def test_the_send_marks_file_is_never_the_destination_even_with_force(run, workspace):
    marks = workspace / "listkit.db-marks"
    marks.write_bytes(b"run1 7 0badc0de\n")
    result = run("backup", str(marks), "--force", ok=False)
    assert result.output == (
        f"Error: DEST {marks} is this workspace's send marks file: name another file\n"
    )
    assert marks.read_bytes() == b"run1 7 0badc0de\n"


@pytest.mark.parametrize("force", [False, True])
def test_a_failed_backup_leaves_nothing_under_dest_and_an_old_backup_as_it_was(
    run, workspace, tmp_path, monkeypatch, force
):
    import sqlite3 as real

    from listkit import backup
    from listkit.errors import ListkitError

    def full_disk(db, partial, dest):
        partial.write_bytes(b"half a copy")
        raise ListkitError(backup.describe_db_error(dest, real.OperationalError("disk is full")))

    monkeypatch.setattr(backup, "_copy", full_disk)
    dest = tmp_path / "b.db"
    if force:
        dest.write_bytes(b"yesterday's backup")
    result = run("backup", str(dest), *(["--force"] if force else []), ok=False)
    assert result.output.startswith(f"Error: the database {dest} cannot grow: the disk is full")
    if force:
        assert dest.read_bytes() == b"yesterday's backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["b.db", "ws"] if force else ["ws"])
