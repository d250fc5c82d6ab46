"""The lean deliveries row (``m020_lean_deliveries``): a database the release before it
wrote (tests/fixtures/before-m020.db, made by scripts/previous_release_db.py with
that release's own code, beside what its `listkit report --json` said of it) is
converted in place by a real process killed half-way and run again; tokens in mail
already sent keep naming their deliveries, and the report says what it said."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_utils import Database

from listkit.audience.deliveries import coupon_deliveries, delivery_id
from listkit.db import (
    LEAN_DELIVERIES,
    copy_lean_batch,
    immediate,
    m020_lean_deliveries,
    migrations,
    open_db,
)
from listkit.mail.tracking import (
    click_url,
    delivery_of,
    delivery_token,
    new_token,
    personal_coupon,
    unsubscribe_url,
)
from listkit.workspace import Workspace
from tests.databases import query, replace_database
from tests.waiting import wait_until

FIXTURES = Path(__file__).parent / "fixtures"
BEFORE = FIXTURES / "before-m020.db"

# A `listkit` process converting the database two rows a batch, which stops (for
# the test to kill it) inside the transaction of its second batch, before COMMIT.
STOPS_IN_SECOND_BATCH = """
import signal, sys
from pathlib import Path
import listkit.db as db

db.LEAN_BATCH = 2
real, batches = db._copy_lean, []

def copy(conn, size):
    n = real(conn, size)
    batches.append(n)
    if len(batches) == 2:
        Path(sys.argv[2]).touch()
        signal.pause()
    return n

db._copy_lean = copy
db.open_db(sys.argv[1])
"""


@pytest.fixture
def old_db(workspace: Path) -> Path:
    """The workspace, its database replaced by the one the release before m020 wrote."""
    return replace_database(workspace, BEFORE)


def killed_half_way(path: Path, tmp_path: Path) -> None:
    ready = tmp_path / "in-second-batch"
    child = subprocess.Popen(
        [sys.executable, "-c", STOPS_IN_SECOND_BATCH, str(path), str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: ready.exists() or child.poll() is not None, seconds=60)
        assert child.poll() is None, "the conversion ended before it could be killed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)


def test_a_conversion_killed_half_way_resumes_and_every_old_token_and_figure_holds(
    run, workspace, old_db, tmp_path
):
    before = dict(query(old_db, "SELECT id, token FROM deliveries"))
    rows_before = query(
        old_db, "SELECT id, campaign_id, subscriber_id, list_id, state FROM deliveries ORDER BY id"
    )
    assert len(before) == 7

    killed_half_way(old_db, tmp_path)
    # The first batch committed, the second rolled back with the process; nothing
    # recorded, the old table whole.
    assert query(old_db, "SELECT count(*) FROM deliveries_lean") == [(2,)]
    assert query(old_db, "SELECT count(*) FROM deliveries WHERE token IS NOT NULL") == [(7,)]
    assert ("m020_lean_deliveries",) not in query(old_db, "SELECT name FROM _sqlite_migrations")

    # The next command finishes it.
    reports = {
        by: json.loads(run("report", "--by", by, "--json").output)
        for by in ("list", "campaign", "offer")
    }
    assert reports == json.loads((FIXTURES / "before-m020.report.json").read_text())
    assert query(old_db, "PRAGMA integrity_check") == [("ok",)]
    assert query(old_db, "PRAGMA foreign_key_check") == []
    assert query(old_db, "SELECT name FROM sqlite_master WHERE name = 'deliveries_lean'") == []
    assert (
        query(
            old_db,
            "SELECT id, campaign_id, subscriber_id, list_id, state FROM deliveries ORDER BY id",
        )
        == rows_before
    )
    assert query(old_db, "SELECT count(*) FROM events WHERE delivery_id IS NOT NULL") == [(3,)]
    assert query(old_db, "SELECT order_id, delivery_id FROM sales ORDER BY order_id") == [
        ("o-1", 1),
        ("o-2", 3),
        ("o-3", None),
    ]

    ws = Workspace(workspace)
    try:
        secret = ws.settings.secret_key()
        # Every token in mail already sent names its delivery, and only that one.
        assert {did: delivery_id(ws.db, secret, token) for did, token in before.items()} == {
            did: did for did in before
        }
        assert delivery_id(ws.db, secret, new_token()) is None
        # ... as a personal coupon carries it (its first 8 characters).
        coupons = {did: personal_coupon("LAUNCH", t)[-8:] for did, t in before.items()}
        assert coupon_deliveries(ws.db, secret, coupons) == {did: [did] for did in before}
        # Attribution by token, run again, finds the same delivery.
        run("sales", "attribute")
        assert query(old_db, "SELECT method, delivery_id FROM sales WHERE order_id = 'o-1'") == [
            ("token", 1)
        ]
        from starlette.testclient import TestClient

        from listkit.web import create_app

        with TestClient(create_app(ws)) as client:
            # A click of an old message redirects; its unsubscribe page knows the reader.
            [(link,)] = query(old_db, "SELECT link FROM links")
            click = client.get(click_url("", secret, before[5], link), follow_redirects=False)
            assert click.status_code == 302 and f"lk={before[5]}" in click.headers["location"]
            page = client.get(unsubscribe_url("", secret, before[5]))
            assert page.status_code == 200 and "eve@example.com" in page.text
    finally:
        ws.close()


def test_a_new_delivery_gets_a_token_derived_from_its_id_and_none_stored(world, ws):
    cid = world.campaign("fresh")
    d = world.deliver(cid, "new@example.com", "blog")
    secret = ws.settings.secret_key()
    assert d["token"] == delivery_token(secret, d["id"])
    assert delivery_of(secret, d["token"]) == d["id"]
    assert ws.db.execute("SELECT legacy_token FROM deliveries").fetchall() == [(None,)]
    assert delivery_id(ws.db, secret, d["token"]) == d["id"]
    # Another secret signs other tokens: this one names nothing there.
    assert delivery_of(b"another-secret-of-16+", d["token"]) is None
    # A token one character off names no delivery.
    changed = d["token"][:-1] + ("a" if d["token"][-1] != "a" else "b")
    assert delivery_id(ws.db, secret, changed) is None


def test_an_id_is_never_given_twice_so_a_deleted_deliverys_token_never_names_another(world, ws):
    cid = world.campaign("fresh")
    first = world.deliver(cid, "a@example.com", "blog")
    with ws.db.conn:
        ws.db.execute("DELETE FROM deliveries WHERE id = ?", [first["id"]])
    second = world.deliver(cid, "b@example.com", "blog")
    assert second["id"] > first["id"]
    assert delivery_id(ws.db, ws.settings.secret_key(), first["token"]) is None


def test_two_processes_converting_at_once_end_with_one_table_and_nothing_doubled(old_db):
    rows = query(old_db, "SELECT id, subscriber_id, state FROM deliveries ORDER BY id")
    first, second = (Database(sqlite3.connect(old_db)) for _ in range(2))
    try:
        migrations.apply(first, stop_before="m020_lean_deliveries")
        with immediate(first):
            first.execute(LEAN_DELIVERIES.format(name="deliveries_lean"))
        assert copy_lean_batch(first.conn, 2) == 2  # the first is half-way ...
        m020_lean_deliveries(second)  # ... when the second converts it all
        assert copy_lean_batch(first.conn, 2) == 0  # the first finds nothing left to copy
        m020_lean_deliveries(first)  # and its step changes nothing
    finally:
        first.close()
        second.close()
    assert query(old_db, "SELECT id, subscriber_id, state FROM deliveries ORDER BY id") == rows
    assert query(old_db, "SELECT count(*) FROM sqlite_master WHERE name = 'deliveries_lean'") == [
        (0,)
    ]


def test_a_conversion_killed_after_its_swap_finds_nothing_left_to_do(workspace, old_db):
    db = open_db(old_db)
    try:
        shape = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        m020_lean_deliveries(db)  # as if the step had not been recorded
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == shape
    finally:
        db.close()


def test_a_sent_row_keeps_its_code_and_not_the_servers_text(world, ws):
    from listkit.send.outbox import Result, record

    cid = world.campaign("fresh")
    sent = world.deliver(cid, "a@example.com", "blog", state="sending")
    failed = world.deliver(cid, "b@example.com", "blog", state="sending")
    record(
        ws.db,
        cid,
        [
            Result(sent["id"], "sent", 250, "2.0.0 Ok: queued as 4XyZ"),
            Result(failed["id"], "failed", 550, "5.1.1 user unknown"),
        ],
    )
    rows = ws.db.execute(
        "SELECT state, last_code, last_reply, sent_unix IS NOT NULL FROM deliveries ORDER BY id"
    ).fetchall()
    assert rows == [("sent", 250, None, 1), ("failed", 550, "5.1.1 user unknown", 0)]
