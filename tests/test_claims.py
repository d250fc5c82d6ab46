"""Claiming a batch of a campaign's outbox: it reads about a batch of rows, in the
state index's order, however many rows wait behind it."""

import pickle

from listkit.db import now
from listkit.send.outbox import claim


def _campaign_waiting(world, db, slug: str, waiting: int, lists=("news",)) -> int:
    """A campaign with ``waiting`` pending deliveries, spread over ``lists``."""
    cid = world.campaign(slug, started=None)
    list_ids = [world.list(name) for name in lists]
    with db.conn:
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM subscribers").fetchone()[0]
        db.conn.executemany(
            "INSERT INTO subscribers (id, email, key, created) VALUES (?, ?, ?, ?)",
            [
                (first + i, f"{slug}{i}@example.com", f"{slug}{i}@example.com", now())
                for i in range(waiting)
            ],
        )
        db.conn.executemany(
            """INSERT INTO memberships (list_id, subscriber_id, status, created)
               VALUES (?, ?, 'active', ?)""",
            [(list_ids[i % len(list_ids)], first + i, now()) for i in range(waiting)],
        )
        db.conn.executemany(
            """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state)
               VALUES (?, ?, ?, 'pending')""",
            [(cid, first + i, list_ids[i % len(list_ids)]) for i in range(waiting)],
        )
    return cid


def _steps_to_claim(db, cid: int, secret: bytes) -> tuple[int, list]:
    """SQLite's work (virtual machine steps, in hundreds) for a claim of 10 rows."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.conn.set_progress_handler(count, 100)
    try:
        rows = claim(db, cid, "1-aa", 10, secret=secret)
    finally:
        db.conn.set_progress_handler(None, 0)
    return steps, rows


def test_a_claim_reads_a_batch_not_every_row_waiting_behind_it(world, ws):
    few = _campaign_waiting(world, ws.db, "few", 100)
    many = _campaign_waiting(world, ws.db, "many", 5000)
    secret = ws.settings.secret_key()
    steps_few, rows_few = _steps_to_claim(ws.db, few, secret)
    steps_many, rows_many = _steps_to_claim(ws.db, many, secret)
    assert len(rows_few) == len(rows_many) == 10
    assert steps_many < 2 * steps_few


def test_claims_take_a_lists_rows_in_id_order_and_every_row_once(world, ws):
    cid = _campaign_waiting(world, ws.db, "two", 30, lists=("news", "deals"))
    secret = ws.settings.secret_key()
    taken = []
    while rows := claim(ws.db, cid, "1-aa", 7, secret=secret):
        taken += [(r.list_slug, r.id) for r in rows]
    assert len(taken) == len({i for _slug, i in taken}) == 30
    for slug in ("news", "deals"):
        ids = [i for s, i in taken if s == slug]
        assert ids == sorted(ids) and len(ids) == 15


def test_a_claimed_rows_token_is_its_deliverys_wherever_it_is_read_and_no_repr_shows_the_secret(
    world, ws
):
    cid = _campaign_waiting(world, ws.db, "tok", 3)
    secret = ws.settings.secret_key()
    rows = claim(ws.db, cid, "1-aa", 3, secret=secret)
    expected = [world.token(r.id) for r in rows]
    # As a render process gets them (pickled), and as the sending process reads them.
    assert [pickle.loads(pickle.dumps(r)).token for r in rows] == expected
    assert [r.token for r in rows] == expected
    assert all("secret" not in repr(r) and repr(secret) not in repr(r) for r in rows)
