"""The database bench/report.py and bench/audience.py measure on, built in bulk.

Made through ``open_db`` (listkit's schema and indexes), then filled in bulk:
1,000,000 subscribers on 20 lists (every 50th unsubscribed), 50 campaigns
with 5,000,000 deliveries and 50,000 sales; ``--scale`` shrinks all of it,
``--deliveries N`` sets the deliveries alone (20,000,000: four times as many
messages to the same readers).
Each bench adds its own extras to the built file (``then``).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from listkit.db import open_db, unix

LISTS, CAMPAIGNS = 20, 50


def build(path: Path, scale: float, deliveries: int | None = None) -> tuple[int, int, int]:
    subscribers = int(1_000_000 * scale)
    deliveries = deliveries or int(5_000_000 * scale)
    sales = int(50_000 * scale)
    db = open_db(path)
    db.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")  # building the fixture only
    conn.execute("PRAGMA cache_size = -400000")
    now = "2026-11-01T00:00:00+00:00"
    with conn:
        conn.executemany(
            "INSERT INTO lists (id, slug, title, created) VALUES (?, ?, ?, ?)",
            [(i, f"list{i}", f"List {i}", now) for i in range(1, LISTS + 1)],
        )
        conn.execute(
            f"""WITH RECURSIVE n(i) AS
                    (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {subscribers})
                INSERT INTO subscribers (id, email, key, name, fields, created)
                SELECT i, 'r' || i || '@example.com', 'r' || i || '@example.com', 'R ' || i,
                       '{{}}', ?
                FROM n""",
            [now],
        )
        conn.execute(
            f"""INSERT INTO memberships (list_id, subscriber_id, status, created)
                SELECT 1 + (id % {LISTS}), id,
                       CASE WHEN id % 50 = 0 THEN 'unsubscribed' ELSE 'active' END, ?
                FROM subscribers""",
            [now],
        )
        conn.executemany(
            """INSERT INTO campaigns (id, slug, offer, lists, state, holdout, attribution_days,
               created, started) VALUES (?, ?, ?, '[]', 'done', 0, 7, ?, ?)""",
            [
                (c, f"c{c}", f"offer{c % 7}", now, f"2026-10-{1 + c % 28:02d}T09:00:00+00:00")
                for c in range(1, CAMPAIGNS + 1)
            ],
        )
        per_campaign = deliveries // CAMPAIGNS
        conn.execute(
            f"""WITH RECURSIVE n(i) AS
                    (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {deliveries - 1})
                INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state, attempts,
                    last_code, last_reply, sent_unix)
                SELECT 1 + i / {per_campaign},
                       1 + (i * 7919) % {subscribers},
                       1 + ((1 + (i * 7919) % {subscribers}) % {LISTS}),
                       CASE WHEN i % 97 = 0 THEN 'failed' WHEN i % 31 = 0 THEN 'held_out'
                            ELSE 'sent' END,
                       CASE WHEN i % 31 = 0 AND i % 97 != 0 THEN 0 ELSE 1 END,
                       CASE WHEN i % 97 = 0 THEN 550 WHEN i % 31 = 0 THEN NULL ELSE 250 END,
                       CASE WHEN i % 97 = 0 THEN '5.1.1 <r' || i || '@example.com>: user unknown'
                       END,
                       CASE WHEN i % 97 = 0 OR i % 31 = 0 THEN NULL ELSE ? END
                FROM n""",
            [unix(now)],
        )
        conn.execute(
            f"""WITH RECURSIVE n(i) AS
                    (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {sales})
                INSERT INTO sales (source, order_id, status, amount, refunded, currency, at,
                    email, email_key, delivery_id, campaign_id, list_id, offer, method, imported)
                SELECT 'gumroad', 'o' || i,
                       CASE WHEN i % 40 = 0 THEN 'refunded' ELSE 'paid' END,
                       2900, CASE WHEN i % 40 = 0 THEN 2900 ELSE 0 END,
                       CASE WHEN i % 10 = 0 THEN 'EUR' ELSE 'USD' END,
                       '2026-10-' || printf('%02d', 1 + i % 28) || 'T12:00:00+00:00',
                       'r' || i || '@example.com', 'r' || i || '@example.com',
                       CASE WHEN i % 3 = 0 THEN NULL ELSE i END,
                       CASE WHEN i % 3 = 0 THEN NULL ELSE 1 + i % {CAMPAIGNS} END,
                       CASE WHEN i % 3 = 0 OR i % {LISTS} IN (7, 13) THEN NULL
                            ELSE 1 + i % {LISTS} END,
                       'offer1',
                       CASE WHEN i % 3 = 0 THEN 'none' ELSE 'token' END, ?
                FROM n""",
            [now],
        )
    conn.execute("ANALYZE")
    conn.close()
    return subscribers, deliveries, sales


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def arguments(doc: str) -> argparse.Namespace:
    """The options both benches take: --scale, --deliveries, --repeat and --keep."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--deliveries", type=int, help="Deliveries alone (default 5,000,000 x --scale)."
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the database at this path.")
    return parser.parse_args()


def ensure(
    path: Path,
    scale: float,
    then: Callable[[Path], None] | None = None,
    deliveries: int | None = None,
) -> None:
    """Build the world at ``path`` unless it is there already (``--keep``), saying so."""
    if path.exists():
        return
    print(f"building the database (scale {scale}) ...", flush=True)
    start = time.perf_counter()
    n = build(path, scale, deliveries)
    if then is not None:
        then(path)
    print(
        f"built {n[0]:,} subscribers, {n[1]:,} deliveries, {n[2]:,} sales "
        f"in {time.perf_counter() - start:.0f}s",
        flush=True,
    )
