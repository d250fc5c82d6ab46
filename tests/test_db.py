"""The database under pressure: locked by another program, full disk, a newer
schema, a read-only workspace. Each is one line naming the database and what
to do; nothing is lost."""

import os
import shutil
import sqlite3
import stat
import subprocess
import sys

import pytest

from listkit import db as dbmod
from listkit import workspace
from listkit.db import open_db
from listkit.send import run as send_run
from listkit.send import sender
from tests.test_send import ADDRS, setup_campaign, totals


@pytest.fixture
def held_lock(workspace, monkeypatch):
    """Another program holds the write lock; listkit waits only 0.1 s for it."""
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 100)
    other = sqlite3.connect(workspace / "listkit.db", isolation_level=None)

    def hold():
        other.execute("BEGIN IMMEDIATE")

    yield hold
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


def test_a_locked_database_is_one_line_for_subscribers_add(run, workspace, held_lock):
    run("lists", "create", "blog")
    held_lock()
    result = run("subscribers", "add", "ann@example.com", "--list", "blog", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: the database {workspace / 'listkit.db'} is locked by another program "
        "(listkit waited 0.1 s): run the command again when it has finished; the change "
        "that needed the lock was not made\n"
    )


def test_a_locked_database_stops_send_with_one_line_and_sends_nothing(
    run, workspace, held_lock, server
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    held_lock()
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: the database {workspace / 'listkit.db'} is locked")
    assert result.output.count("\n") == 1
    assert handler.messages == []


def full_after_open(monkeypatch):
    """Every database listkit opens can no longer grow: a full disk, without root."""
    real = dbmod.open_db

    def opened(*args, **kwargs):
        db = real(*args, **kwargs)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(workspace, "open_db", opened)
    monkeypatch.setattr(send_run, "open_db", opened)


def test_a_full_disk_is_one_line_for_import_and_send_and_nothing_is_lost(
    run, workspace, tmp_path, monkeypatch, server
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    many = tmp_path / "many.csv"
    many.write_text("email\n" + "".join(f"s{i}@example.com\n" for i in range(3000)))
    full_after_open(monkeypatch)
    result = run("subscribers", "import", str(many), "--list", "blog", ok=False)
    assert result.exit_code == 1
    # The importer words it itself; one line naming the database either way.
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert str(workspace / "listkit.db") in result.output and "full" in result.output
    # The outbox of 3006 recipients cannot be written either.
    monkeypatch.undo()
    run("subscribers", "import", str(many), "--list", "blog")
    full_after_open(monkeypatch)
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: the database {workspace / 'listkit.db'} cannot")
    assert handler.messages == []
    monkeypatch.undo()
    run("send", "t", "--yes")
    assert handler.recipients() == {
        a: 1 for a in [*ADDRS, *(f"s{i}@example.com" for i in range(3000))]
    }


def test_a_file_on_a_full_disk_is_named(run, workspace, tmp_path):
    run("lists", "create", "blog")
    source = tmp_path / "in.csv"
    source.write_text("email\nnot-an-address\nann@example.com\n")
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    device_mode = os.stat("/dev/full").st_mode
    try:
        result = run(
            "subscribers",
            "import",
            str(source),
            "--list",
            "blog",
            "--errors",
            "/dev/full",
            ok=False,
        )
        assert os.stat("/dev/full").st_mode == device_mode  # a device is not ours to narrow
    finally:
        if os.stat("/dev/full").st_mode != device_mode:  # put the machine back as it was
            os.chmod("/dev/full", stat.S_IMODE(device_mode))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "/dev/full" in result.output and "space" in result.output.lower()


def test_a_database_from_a_newer_listkit_is_refused(run, workspace):
    db = open_db(workspace / "listkit.db")
    with db.conn:
        db.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('listkit', 'm999_from_the_future', '2030-01-01')"
        )
    db.close()
    result = run("lists", "ls", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {workspace / 'listkit.db'} was written by a newer listkit (schema steps "
        "this one does not know: m999_from_the_future): upgrade listkit to use it; nothing "
        "was changed\n"
    )


def in_read_only_mount(folder, *args):
    """Run listkit where ``folder`` is mounted read-only (a private mount namespace)."""
    script = (
        f"mount --bind -o ro {folder} {folder} && "
        f"mount -o remount,bind,ro {folder} && "
        f"exec {sys.executable} -m listkit -w {folder} " + " ".join(args)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env
    )


def test_a_read_only_workspace_reads_and_says_why_it_cannot_write(run, workspace):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare to mount the workspace read-only")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here")
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    reading = in_read_only_mount(workspace, "subscribers", "ls", "--list", "blog", "--json")
    assert reading.returncode == 0, reading.stderr
    assert "ann@example.com" in reading.stdout
    writing = in_read_only_mount(workspace, "lists", "create", "news")
    assert writing.returncode == 1, writing.stderr
    assert writing.stderr == (
        f"Error: cannot write the database {workspace / 'listkit.db'}: the folder "
        f"{workspace} or the file is not writable, and SQLite (in WAL mode) needs to write "
        "the database and its -wal and -shm files beside it; run listkit as a user who may "
        "write there, or work on a copy of the workspace\n"
    )


def test_a_database_locked_mid_send_stops_the_run_and_the_next_run_sends_nothing_twice(
    run, workspace, monkeypatch, server
):
    from listkit.errors import SendError
    from listkit.workspace import Workspace

    addresses = [f"mid{i}@example.com" for i in range(40)]
    controller, handler = server
    setup_campaign(run, workspace, controller.port, addresses, extra="rate = 200\n")
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 100)
    other = sqlite3.connect(workspace / "listkit.db", isolation_level=None)

    def lock_after_the_first(_result):
        if not other.in_transaction:
            other.execute("BEGIN IMMEDIATE")

    ws = Workspace(workspace)
    try:
        with pytest.raises(SendError) as e:
            sender.send_campaign(ws, "t", on_result=lock_after_the_first, batch=10)
    finally:
        other.execute("ROLLBACK")
        other.close()
        ws.close()
    assert str(e.value).startswith(f"the database {workspace / 'listkit.db'} is locked")
    assert "resumes every message not recorded as sent" in str(e.value)
    assert len(handler.messages) < len(addresses)
    monkeypatch.undo()
    run("send", "t", "--yes", ok=False)
    assert max(handler.recipients().values()) == 1
    final = totals(workspace)
    assert final["sent"] + final["unknown"] == len(addresses)
    # Sent only what the server took; what it took is sent or unknown. An unknown one may
    # not have reached it (marked before its content went, the run stopped before the end).
    assert final["sent"] <= len(handler.messages) <= final["sent"] + final["unknown"]


def test_a_send_lock_on_a_full_disk_is_named(run, workspace, server):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    (workspace / sender.LOCK_NAME).symlink_to("/dev/full")  # writes fail: ENOSPC
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {workspace / sender.LOCK_NAME}: no space left on the device; free some "
        "space and run the command again\n"
    )
    assert handler.messages == []


def test_waiting_for_the_write_lock_tries_again_every_few_milliseconds_until_it_is_free(
    tmp_path,
):
    path = tmp_path / "lock.db"
    open_db(path).conn.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    conn = open_db(path).conn
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 20:
            other.execute("COMMIT")  # the other writer lets go

    dbmod.begin_immediate(conn, sleep=sleep)
    assert conn.in_transaction
    assert len(sleeps) == 20
    assert max(sleeps) <= dbmod.LOCK_POLL_MAX <= 0.002
    conn.execute("ROLLBACK")
    # The connection keeps its busy timeout for every other statement.
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == dbmod.BUSY_TIMEOUT_MS
    other.close()


def test_a_write_lock_held_past_the_timeout_is_sqlites_database_is_locked(tmp_path):
    path = tmp_path / "lock.db"
    open_db(path).conn.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    conn = open_db(path).conn
    sleeps = []
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        dbmod.begin_immediate(conn, timeout=0, sleep=sleeps.append)
    assert sleeps == []
    assert not conn.in_transaction
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == dbmod.BUSY_TIMEOUT_MS
    other.execute("ROLLBACK")
    other.close()


def test_dropping_a_not_null_edits_only_that_column_and_refuses_a_spelling_it_does_not_know():
    from listkit.db import _drop_not_null

    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT NOT NULL, x_created TEXT NOT NULL)"
    )
    conn.execute('CREATE TABLE q (id INTEGER PRIMARY KEY, "created" TEXT NOT NULL)')
    _drop_not_null(conn, "t", "created")
    notnull = {r[1]: r[3] for r in conn.execute("PRAGMA table_info(t)")}
    assert notnull == {"id": 0, "created": 0, "x_created": 1}
    conn.execute("INSERT INTO t (x_created) VALUES ('kept')")  # in the same connection
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    _drop_not_null(conn, "t", "created")  # already nullable: nothing to do
    with pytest.raises(RuntimeError, match=r"NOT NULL of q\.created"):
        _drop_not_null(conn, "q", "created")
    assert {r[1]: r[3] for r in conn.execute("PRAGMA table_info(q)")}["created"] == 1
