"""The web app's shared machinery: health, plain errors, body limits, the group-committing
writer, and a log that never prints a request's path."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from listkit.web import create_app
from listkit.web.common import read_body, read_form
from tests.waiting import wait_until
from tests.web_server import serve


async def _echo_size(request: Request):
    body = await read_body(request, limit=1000)
    return PlainTextResponse(str(len(body)))


async def _echo_form(request: Request):
    form = await read_form(request)
    return PlainTextResponse(",".join(f"{k}={v}" for k, v in sorted(form.items())))


async def _boom(request: Request):
    raise RuntimeError("internal detail that must not be shown")


routes = [
    Route("/t/size", _echo_size, methods=["POST"]),
    Route("/t/form", _echo_form, methods=["POST"]),
    Route("/t/boom/{secret}", _boom, methods=["GET"]),
]


@pytest.fixture
def client(ws):
    app = create_app(ws, modules=["tests.test_web"])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_healthz_answers_ok_and_head_works(client):
    assert client.get("/healthz").text == "ok\n"
    assert client.head("/healthz").status_code == 200


def test_unknown_paths_and_wrong_methods_get_plain_errors(client):
    r = client.get("/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/plain")
    assert client.post("/healthz").status_code == 405


def test_a_server_error_shows_no_traceback_and_logs_no_path(client, caplog):
    with caplog.at_level(logging.INFO, logger="listkit.serve"):
        r = client.get("/t/boom/hunter2-secret")
    assert r.status_code == 500
    assert "internal detail" not in r.text and "Traceback" not in r.text
    assert "hunter2-secret" not in caplog.text
    assert "/t/boom/{secret}" in caplog.text


def test_bodies_over_the_limit_are_refused_with_413(client):
    assert client.post("/t/size", content=b"x" * 1000).text == "1000"
    assert client.post("/t/size", content=b"x" * 1001).status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"x" * 100

    assert client.post("/t/size", content=chunks()).status_code == 413


def test_forms_must_be_urlencoded(client):
    r = client.post("/t/form", data={"email": "a@example.com", "name": "Ann"})
    assert r.text == "email=a@example.com,name=Ann"
    assert client.post("/t/form", json={"email": "x"}).status_code == 415
    assert (
        client.post(
            "/t/form",
            content="&".join(["a=1"] * 101),
            headers={"content-type": "application/x-www-form-urlencoded"},
        ).status_code
        == 400
    )


def test_writes_commit_together_and_a_failing_write_rolls_back_alone(ws):
    app = create_app(ws, modules=[])
    webdb = app.state.db
    ws.db.execute("CREATE TABLE t (v INTEGER UNIQUE)")

    def insert(db, v):
        db.execute("INSERT INTO t (v) VALUES (?)", [v])
        return v

    async def main():
        return await asyncio.gather(
            *(webdb.write(insert, v) for v in [1, 2, 2, 3]), return_exceptions=True
        )

    results = asyncio.run(main())
    assert results[:2] == [1, 2] and results[3] == 3
    assert isinstance(results[2], Exception) and "UNIQUE" in str(results[2])
    assert [r[0] for r in ws.db.execute("SELECT v FROM t ORDER BY v")] == [1, 2, 3]


def test_listkit_serve_runs_as_a_process_on_loopback(workspace):
    with serve(workspace) as base, urllib.request.urlopen(base + "/healthz") as r:
        assert r.read() == b"ok\n"


def test_a_web_write_waits_for_another_programs_write_lock_and_commits_once_it_is_free(
    tmp_path, monkeypatch
):
    import sqlite3

    from listkit import db as dbmod
    from listkit.web import common

    path = tmp_path / "web.db"
    dbmod.open_db(path).conn.close()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE notes (text TEXT)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO notes VALUES ('from the other program')")
    tries = []

    def begin(conn):
        def sleep(seconds):
            tries.append(seconds)
            if other.in_transaction:
                other.execute("COMMIT")  # the other program lets go after the first try

        dbmod.begin_immediate(conn, sleep=sleep)

    monkeypatch.setattr(common, "begin_immediate", begin)
    web = common.WebDB(path)

    def add(db, text):
        db.execute("INSERT INTO notes VALUES (?)", [text])
        return text

    assert asyncio.run(web.write(add, "from the service")) == "from the service"
    assert len(tries) == 1
    assert [r[0] for r in other.execute("SELECT text FROM notes ORDER BY rowid")] == [
        "from the other program",
        "from the service",
    ]
    other.close()


def _web_db_with_a_table(tmp_path):
    from listkit import db as dbmod
    from listkit.web import common

    path = tmp_path / "web.db"
    dbmod.open_db(path).conn.close()
    return path, common.WebDB(path)


def _add_pages(db, n):
    db.execute("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
    db.conn.executemany("INSERT INTO blobs VALUES (zeroblob(4000))", [()] * n)


def test_a_web_commit_never_checkpoints_the_wal_on_the_request_path(tmp_path, monkeypatch):
    from listkit.web import common

    monkeypatch.setattr(common, "CHECKPOINT_EVERY", 10**9)
    path, web = _web_db_with_a_table(tmp_path)
    before = path.stat().st_size

    async def writes():
        for _ in range(3):  # past SQLite's automatic checkpoint at 1,000 pages
            await web.write(_add_pages, 500)

    asyncio.run(writes())
    # The pages are committed (in the WAL) but were not copied into the database file.
    assert path.stat().st_size == before
    assert (tmp_path / "web.db-wal").stat().st_size > 1000 * 4096


def test_a_thread_of_its_own_checkpoints_what_the_web_writer_committed(tmp_path, monkeypatch):

    from listkit.web import common

    monkeypatch.setattr(common, "CHECKPOINT_EVERY", 2)
    path, web = _web_db_with_a_table(tmp_path)

    async def writes():
        for _ in range(2):
            await web.write(_add_pages, 100)

    asyncio.run(writes())
    # The checkpoint runs beside the writer: wait for it, 30 s at most.
    wait_until(lambda: path.stat().st_size > 200 * 4000, 30, every=0.1)


def test_writes_committed_in_one_group_each_get_their_own_answer_and_a_failing_one_only_its_error(
    tmp_path,
):
    path, web = _web_db_with_a_table(tmp_path)
    asyncio.run(web.write(lambda db: db.execute("CREATE TABLE notes (n INTEGER NOT NULL)")))

    def add(db, n):
        db.execute("INSERT INTO notes VALUES (?)", [n])
        return n * 10

    async def many():
        return await asyncio.gather(
            *(web.write(add, n if n != 7 else None) for n in range(20)), return_exceptions=True
        )

    answers = asyncio.run(many())
    assert [a for i, a in enumerate(answers) if i != 7] == [n * 10 for n in range(20) if n != 7]
    assert isinstance(answers[7], Exception) and "NOT NULL" in str(answers[7])
    import sqlite3

    other = sqlite3.connect(path)
    assert [r[0] for r in other.execute("SELECT n FROM notes ORDER BY n")] == [
        n for n in range(20) if n != 7
    ]
    other.close()
