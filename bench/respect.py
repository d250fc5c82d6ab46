"""Benchmark: claiming a campaign's outbox with the reader's quiet period and frequency
cap checked (``send.respect``) against the same claims without them.

Builds the database of ``bench/big_db.py`` (1,000,000 subscribers, 50 sent campaigns
with 5,000,000 deliveries, 50,000 sales; ``--scale`` shrinks all of it) and adds a
campaign being sent to every 5th subscriber (200,000 rows at scale 1). Then, in
the same run, on the same file, each pass claims that whole outbox in batches of
200 (``outbox.claim``, as a send does) and puts it back, alternating:

- baseline: no check (neither setting on, or a campaign with ``sells = false``);
- checked: both checks run, with windows of a second that hold nobody back;
- respect: LISTKIT_QUIET_AFTER_PURCHASE=7d and LISTKIT_FREQUENCY=1/7d on
  2026-10-29, when the sales and the campaigns of the last 7 days (about a
  quarter of each) are in the windows.

Prints each pass, the median per message and the ratios. Goal: the check costs
a small part of what sending a message costs (tenths of a millisecond, against
milliseconds); holding a message back writes its row as claiming it does.

    .venv/bin/python bench/respect.py [--scale 0.1] [--repeat 5] [--keep DB]
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from big_db import CAMPAIGNS, arguments, ensure

from listkit.config import Frequency
from listkit.db import clock, open_db
from listkit.send.outbox import claim
from listkit.send.respect import Respect

NEW = CAMPAIGNS + 1  # the campaign being sent
BATCH = 200
# The deliveries of big_db are sent on 2026-11-01, its sales made in October.
AT = datetime(2026, 10, 29, 12, tzinfo=UTC)


def add_campaign(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            """INSERT INTO campaigns (id, slug, offer, lists, state, holdout, attribution_days,
               created, started) VALUES (?, 'new', 'offer1', '[]', 'sending', 0, 7, ?, ?)""",
            [NEW, AT.isoformat(), AT.isoformat()],
        )
        # Each campaign sent in the hour after it started (big_db's deliveries all
        # carry 2026-11-01): those of the last 7 days are in the cap's window.
        conn.execute("UPDATE campaigns SET finished = replace(started, 'T09:', 'T10:')")
        conn.execute(
            """UPDATE deliveries SET sent_at = (SELECT c.finished FROM campaigns c
               WHERE c.id = deliveries.campaign_id)"""
        )
        conn.execute(
            """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, email, token,
               state, created)
               SELECT ?, s.id, m.list_id, 'x', 'n' || s.id, 'pending', ?
               FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id
               WHERE s.id % 5 = 0 AND m.status = 'active'""",
            [NEW, AT.isoformat()],
        )
    conn.execute("ANALYZE")
    conn.close()


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="listkit-bench-respect-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        ensure(path, args.scale, then=add_campaign)
        db = open_db(path)
        rows = db.execute("SELECT COUNT(*) FROM deliveries WHERE campaign_id = ?", [NEW]).fetchone()
        selling = tuple(range(1, NEW + 1))
        rules = {
            "baseline": None,
            # Both checks run, and hold nobody back (windows of a second).
            "checked": Respect(timedelta(seconds=1), Frequency(1, timedelta(seconds=1)), selling),
            "respect": Respect(timedelta(days=7), Frequency(1, timedelta(days=7)), selling),
        }
        clock.offset = AT - datetime.now(UTC)

        def one_pass(respect) -> tuple[float, dict]:
            start = datetime.now(UTC)
            n_claimed = 0
            while claimed := claim(db, NEW, "bench", BATCH, respect=respect):
                n_claimed += len(claimed)
            elapsed = (datetime.now(UTC) - start).total_seconds()
            states = dict(
                db.execute(
                    "SELECT state, COUNT(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
                    [NEW],
                ).fetchall()
            )
            with db.conn:
                db.execute(
                    """UPDATE deliveries SET state = 'pending', phase = NULL, claimed_by = NULL,
                       next_attempt = NULL, last_reply = NULL, attempts = 0
                       WHERE campaign_id = ?""",
                    [NEW],
                )
            return elapsed, states

        print(f"outbox of {rows[0]:,} rows, claimed {BATCH} at a time")
        times: dict[str, list[float]] = {name: [] for name in rules}
        for round_ in range(args.repeat):
            for name, respect in rules.items():
                elapsed, states = one_pass(respect)
                times[name].append(elapsed)
                print(f"  round {round_ + 1} {name:9} {elapsed:6.2f}s  {states}")
        base, checked, mine = (statistics.median(times[n]) for n in rules)
        per = 1e6 / rows[0]
        print(
            f"median per message: baseline {base * per:.0f} us, checked (none held) "
            f"{checked * per:.0f} us (ratio {checked / base:.2f}), respect (most held back) "
            f"{mine * per:.0f} us (ratio {mine / base:.2f})"
        )
        db.close()


if __name__ == "__main__":
    main()
