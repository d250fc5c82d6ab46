"""An import that cannot write ends in one clear line and imports nothing."""

import errno
import io
import json
import sqlite3

import pytest

import listkit.workspace
from listkit.errors import ListkitError


@pytest.fixture
def big_file(tmp_path):
    f = tmp_path / "many.csv"
    f.write_text("email,name\n" + "".join(f"p{i}@example.com,P {i}\n" for i in range(5000)))
    return f


@pytest.fixture(params=["in-process", "reader-process"])
def reader(request, monkeypatch):
    import listkit.audience.imports

    if request.param == "reader-process":
        monkeypatch.setattr(listkit.audience.imports, "PROCESS_MIN_BYTES", 0)


def test_a_full_database_ends_the_import_with_one_line_and_imports_nothing(
    run, workspace, big_file, reader, monkeypatch
):
    run("lists", "create", "blog")
    real = listkit.workspace.open_db

    def small_db(path, **kwargs):
        db = real(path, **kwargs)
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages + 10}")  # full after a few rows
        return db

    monkeypatch.setattr(listkit.workspace, "open_db", small_db)
    result = run("subscribers", "import", str(big_file), "--list", "blog", ok=False)
    db_path = workspace / "listkit.db"
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot import into {db_path}: the database or its disk is full. Free space "
        "on the disk and run the import again; nothing was imported\n",
    )
    monkeypatch.setattr(listkit.workspace, "open_db", real)
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert rows == []


def test_a_database_locked_past_the_busy_timeout_ends_the_import_with_one_line(
    run, workspace, big_file, reader, monkeypatch
):
    run("lists", "create", "blog")
    monkeypatch.setattr("listkit.db.BUSY_TIMEOUT_MS", 100)
    other = sqlite3.connect(workspace / "listkit.db")
    other.execute("BEGIN IMMEDIATE")
    try:
        result = run("subscribers", "import", str(big_file), "--list", "blog", ok=False)
    finally:
        other.rollback()
        other.close()
    db_path = workspace / "listkit.db"
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot import into {db_path}: another process is writing to the database "
        "(a send or another import?). Run the import again when it has finished; nothing "
        "was imported\n",
    )
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert rows == []


def test_a_read_error_in_the_reader_process_is_one_line(run, big_file, monkeypatch):
    import listkit.audience.imports

    monkeypatch.setattr(listkit.audience.imports, "PROCESS_MIN_BYTES", 0)
    run("lists", "create", "blog")

    def failing(records):
        raise OSError(5, "Input/output error")
        yield  # a generator, as the real one

    monkeypatch.setattr(
        listkit.audience.imports._Parser, "chunks", lambda self, records: failing(records)
    )
    result = run("subscribers", "import", str(big_file), "--list", "blog", ok=False)
    assert result.output == (
        f"Error: reading {big_file} failed: Input/output error; nothing was imported\n"
    )


class _FullDisk(io.RawIOBase):
    """A file on a full disk: every write fails as the kernel says so."""

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_under_the_errors_file_imports_nothing_and_says_so(ws, tmp_path):
    from listkit.audience.imports import import_subscribers
    from listkit.audience.lists import create_list

    create_list(ws.db, "blog")
    f = tmp_path / "some_bad.csv"
    f.write_text("email\na@example.com\nnot-an-address\n")
    errors_to = io.TextIOWrapper(io.BufferedWriter(_FullDisk()), encoding="utf-8", newline="")
    with f.open("rb") as stream, pytest.raises(ListkitError) as raised:
        import_subscribers(
            ws.db, stream, "blog", name=str(f), errors_to=errors_to, errors_name="rejected.csv"
        )
    assert str(raised.value) == (
        "cannot write the rejected rows to rejected.csv: No space left on device; "
        "nothing was imported"
    )
    assert ws.db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0
