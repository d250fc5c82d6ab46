"""The deliveries counted per campaign, state and list (``delivery_counts``, kept by
triggers) are always what a GROUP BY over the deliveries gives: the report reads them."""

from __future__ import annotations

import shutil
from pathlib import Path

from listkit.db import open_db
from tests.world import World
from tests.world import delivery_counts as counted

FIXTURES = Path(__file__).parent / "fixtures"


def test_counts_follow_every_insert_change_and_delete_of_a_delivery(ws):
    w = World(ws.db)
    first, second = w.campaign("first"), w.campaign("second")
    for i in range(6):
        w.deliver(first, f"a{i}@example.com", "blog", state="pending")
        w.deliver(second, f"b{i}@example.com", "pod" if i % 2 else "blog")
    kept, grouped = counted(ws.db)
    assert kept == grouped and sum(n for *_k, n in kept) == 12
    with ws.db.conn:
        ws.db.execute("UPDATE deliveries SET state = 'sending' WHERE id % 3 = 0")
        ws.db.execute("UPDATE deliveries SET state = 'sent', attempts = 1 WHERE state = 'sending'")
        ws.db.execute("UPDATE deliveries SET attempts = attempts + 1")  # no counted column
        ws.db.execute(
            "UPDATE deliveries SET list_id = (SELECT id FROM lists WHERE slug = 'pod') WHERE id = 1"
        )
        ws.db.execute("DELETE FROM deliveries WHERE id = 2")
    assert counted(ws.db)[0] == counted(ws.db)[1]
    # A campaign removed takes its deliveries (ON DELETE CASCADE), and their counts.
    with ws.db.conn:
        ws.db.execute("DELETE FROM campaigns WHERE id = ?", [second])
    kept, grouped = counted(ws.db)
    assert kept == grouped and {k[0] for k in kept} == {first}


def test_a_database_made_before_the_counts_gets_them_from_its_deliveries(tmp_path):
    path = tmp_path / "listkit.db"
    shutil.copy(FIXTURES / "before-m020.db", path)
    db = open_db(path)
    try:
        kept, grouped = counted(db)
        assert kept == grouped and kept
    finally:
        db.close()
