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
