"""Benchmark: the audience `campaigns check` counts, with three rules, against one COUNT(*).

Builds the database of ``bench/big_db.py``, as ``bench/report.py`` does
(1,000,000 subscribers on 20 lists, 50 campaigns with 5,000,000 deliveries,
50,000 sales; ``--scale`` shrinks it) and gives every third subscriber the
custom field plan=pro. A campaign to five lists with three rules:

    mailed_by = "c1"      not_bought = "anything"      [where.field] plan = "pro"

Then, in the same run, on the same file, warm, each several times:

- baseline: one hand-written ``SELECT COUNT(*)`` over the same join (lists,
  active memberships, suppressions and the three rules as plain SQL; a
  purchase is an order from the address or attributed to a delivery to the
  subscriber, as listkit counts it);
- listkit: what `campaigns check` computes for the audience: every rule
  alone and combined, per list (``describe_audience``), the SQL built from
  the rules and checked against the database.

Goal: listkit under 3x the one query (a goal, not a test).

    .venv/bin/python bench/audience.py [--scale 0.1] [--keep DB]
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from big_db import arguments, ensure, timed  # the database bench/report.py uses too

from listkit.audience.audiences import rules_from_table
from listkit.db import open_db
from listkit.send.campaigns import Campaign, describe_audience

LISTS = ("list1", "list2", "list3", "list4", "list5")

BASELINE = """
    SELECT COUNT(*) FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id
    WHERE m.list_id IN (1, 2, 3, 4, 5) AND m.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key)
      AND s.id IN (SELECT subscriber_id FROM deliveries WHERE campaign_id = 1 AND state = 'sent')
      AND s.key NOT IN (SELECT email_key FROM sales WHERE email_key IS NOT NULL
                        AND status IN ('paid', 'partially_refunded'))
      AND s.id NOT IN (SELECT d.subscriber_id FROM sales x JOIN deliveries d
                       ON d.id = x.delivery_id WHERE x.status IN ('paid', 'partially_refunded'))
      AND json_extract(s.fields, '$.plan') = 'pro'"""


def plan_pro(path: Path) -> None:
    """This bench's extra: every third subscriber has the custom field plan=pro."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            """UPDATE subscribers SET fields = json_object('plan',
               CASE WHEN id % 3 = 0 THEN 'pro' ELSE 'free' END)"""
        )
    conn.close()


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="listkit-bench-audience-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        ensure(path, args.scale, then=plan_pro)
        conn = sqlite3.connect(path)
        db = open_db(path)
        campaign = Campaign(
            slug="bench",
            offer="offer1",
            lists=LISTS,
            where=rules_from_table(
                {"mailed_by": "c1", "not_bought": "anything", "field": {"plan": "pro"}}, "bench"
            ),
        )
        expected = conn.execute(BASELINE).fetchone()[0]
        lines, per_list = describe_audience(db, campaign)
        if sum(per_list.values()) != expected:
            raise SystemExit(f"listkit counts {sum(per_list.values())}, the query {expected}")

        def baseline() -> None:
            conn.execute(BASELINE).fetchone()

        def listkit() -> None:
            describe_audience(db, campaign)

        base = timed(baseline, args.repeat)
        lk = timed(listkit, args.repeat)
        db.close()
        conn.close()
    for line in lines:
        print(f"  {line}")
    print(f"  audience {expected:,} ({', '.join(f'{k} {v:,}' for k, v in per_list.items())})")
    print(f"{'':48}{'best s':>8}{'median s':>10}")
    print(f"{'one COUNT(*) over the same join':48}{min(base):8.3f}{statistics.median(base):10.3f}")
    name = "campaigns check audience (3 rules, per list)"
    print(f"{name:48}{min(lk):8.3f}{statistics.median(lk):10.3f}")
    print(f"ratio (median; goal under 3x): {statistics.median(lk) / statistics.median(base):.2f}x")


if __name__ == "__main__":
    main()
