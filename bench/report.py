"""Benchmark: `listkit report --by list --json` against one plain GROUP BY.

Builds a listkit database (through ``open_db``, so with listkit's schema and
indexes) holding 1,000,000 subscribers on 20 lists, 50 campaigns with
5,000,000 deliveries and 50,000 sales (``--scale`` shrinks all of it), then in
the same run, on the same file, warm, best of several runs each:

- baseline: ``SELECT list_id, COUNT(*) FROM deliveries GROUP BY list_id`` in
  ``sqlite3``;
- listkit: the real ``listkit report --by list --json`` command (a
  subprocess: Python start-up included), and the library call alone.

Goal: the full report at most 3x the one query.

    .venv/bin/python bench/report.py [--scale 0.1] [--keep DB]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from listkit.db import open_db
from listkit.reports import build_report

LISTS, CAMPAIGNS = 20, 50


def build(path: Path, scale: float) -> tuple[int, int, int]:
    subscribers = int(1_000_000 * scale)
    deliveries = int(5_000_000 * scale)
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
                INSERT INTO deliveries (campaign_id, subscriber_id, list_id, email, token,
                    message_id, state, created, sent_at)
                SELECT 1 + i / {per_campaign},
                       1 + (i * 7919) % {subscribers},
                       1 + ((1 + (i * 7919) % {subscribers}) % {LISTS}),
                       'x', printf('t%015d', i), NULL,
                       CASE WHEN i % 97 = 0 THEN 'failed' WHEN i % 31 = 0 THEN 'held_out'
                            ELSE 'sent' END,
                       ?, ?
                FROM n""",
            [now, now],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the database at this path.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listkit-bench-report-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        if not path.exists():
            print(f"building the database (scale {args.scale}) ...", flush=True)
            start = time.perf_counter()
            n = build(path, args.scale)
            print(
                f"built {n[0]:,} subscribers, {n[1]:,} deliveries, {n[2]:,} sales "
                f"in {time.perf_counter() - start:.0f}s"
            )
        workspace = path.parent
        conn = sqlite3.connect(path)

        query = "SELECT list_id, COUNT(*) FROM deliveries GROUP BY list_id"

        def baseline() -> None:
            conn.execute(query).fetchall()

        # The same query from a fresh process, for a like-for-like comparison with
        # the CLI, which pays for starting Python too.
        one_shot = [
            sys.executable,
            "-c",
            f"import sqlite3; sqlite3.connect({str(path)!r}).execute({query!r}).fetchall()",
        ]

        def baseline_process() -> None:
            subprocess.run(one_shot, check=True)

        cli = [
            sys.executable,
            "-m",
            "listkit",
            "--workspace",
            str(workspace),
            "report",
            "--by",
            "list",
            "--json",
        ]
        env_db = {"LISTKIT_DB": str(path)}

        def listkit_cli() -> None:
            import os

            subprocess.run(cli, check=True, capture_output=True, env={**os.environ, **env_db})

        db = open_db(path)

        def library() -> None:
            build_report(db, "list")

        baseline()
        listkit_cli()
        library()  # warm the page cache for all of them
        base = timed(baseline, args.repeat)
        base_proc = timed(baseline_process, args.repeat)
        lk = timed(listkit_cli, args.repeat)
        lib = timed(library, args.repeat)
        rows = len(build_report(db, "list")["rows"])
        db.close()
        conn.close()
    print(f"{'':40}{'best s':>8}{'median s':>10}")
    name = "same query, from a new python process"
    print(f"{name:40}{min(base_proc):8.3f}{statistics.median(base_proc):10.3f}")
    print(
        f"{'SELECT list_id, COUNT(*) GROUP BY':40}{min(base):8.3f}{statistics.median(base):10.3f}"
    )
    print(
        f"{'listkit report --by list --json (CLI)':40}{min(lk):8.3f}{statistics.median(lk):10.3f}"
    )
    name = "build_report(db, list) (library)"
    print(f"{name:40}{min(lib):8.3f}{statistics.median(lib):10.3f}")
    med = statistics.median
    print(
        f"ratios (median; goal <= 3x): CLI / query from a new process "
        f"{med(lk) / med(base_proc):.2f}x; library / query in process {med(lib) / med(base):.2f}x; "
        f"CLI / query in process {med(lk) / med(base):.2f}x; {rows} list rows"
    )


if __name__ == "__main__":
    main()
