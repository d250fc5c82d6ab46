"""Where buyers come from, and who never answers: revenue by signup source and month,
a subscriber's purchases, and the silent subscribers of each list.

The rules: a subscriber's purchases are the orders from their address plus
those attributed to a delivery to them (each sale counted once); revenue is
per currency, never converted; pruning a silent subscriber only changes the
membership's status (``pruned``) with its reason, never deleting history.
"""

from __future__ import annotations

from collections import defaultdict

from sqlite_utils import Database

from listkit.audience.audiences import SIGNUP
from listkit.audience.lists import get_list
from listkit.audience.provenance import SUBSCRIBER_SOURCE
from listkit.db import immediate, now
from listkit.errors import InputError
from listkit.sales.reports import period_bounds
from listkit.vocab import ORDER_SQL, REVENUE_SQL

ORDER_KEYS = ("at", "order", "product", "amount", "refunded", "currency", "status", "campaign")
GROUPS = {
    "source": f"coalesce({SUBSCRIBER_SOURCE}, '(unknown)')",
    "signup-month": f"coalesce(substr({SIGNUP}, 1, 7), '(unknown)')",
}


def _owned(period: str) -> str:
    """(subscriber id, sale id) for every sale a subscriber made, each pair once."""
    return f"""
        SELECT p.id AS sid, x.id AS sale FROM sales x JOIN subscribers p ON p.key = x.email_key
        WHERE 1 {period}
        UNION
        SELECT d.subscriber_id, x.id FROM sales x JOIN deliveries d ON d.id = x.delivery_id
        WHERE 1 {period}"""


def _period(since: str | None, until: str | None) -> tuple[str, list]:
    start, end = period_bounds(since, until)
    sql, params = "", []
    if start:
        sql, params = sql + " AND x.at >= ?", [*params, start]
    if end:
        sql, params = sql + " AND x.at < ?", [*params, end]
    return sql, params


def buyers_by(db: Database, by: str, since: str | None = None, until: str | None = None) -> dict:
    """Subscribers, buyers, orders, revenue and revenue per subscriber per group."""
    if by not in GROUPS:
        raise InputError(f"--by must be one of {', '.join(GROUPS)}")
    group = GROUPS[by]
    period, params = _period(since, until)
    rows: dict = defaultdict(lambda: {"subscribers": 0, "buyers": 0, "orders": 0, "revenue": {}})
    for key, n in db.execute(f"SELECT {group}, COUNT(*) FROM subscribers s GROUP BY 1"):
        rows[key]["subscribers"] = n
    for key, currency, buyers, orders, revenue in db.execute(
        f"""WITH owned AS ({_owned(period)})
            SELECT {group}, x.currency,
                   COUNT(DISTINCT s.id) FILTER (WHERE x.status IN {ORDER_SQL}),
                   COUNT(*) FILTER (WHERE x.status IN {ORDER_SQL}),
                   coalesce(SUM(x.amount - x.refunded) FILTER (WHERE x.status IN
                            {REVENUE_SQL}), 0)
            FROM owned o JOIN sales x ON x.id = o.sale JOIN subscribers s ON s.id = o.sid
            GROUP BY 1, 2""",
        params * 2,
    ):
        row = rows[key]
        row["buyers"] += buyers
        row["orders"] += orders
        row["revenue"][currency] = row["revenue"].get(currency, 0) + revenue
    out = []
    for key, row in sorted(rows.items()):
        n = row["subscribers"]
        out.append(
            {
                by: key,
                **row,
                "revenue_per_subscriber": {
                    c: (v + n // 2) // n if n else 0 for c, v in row["revenue"].items()
                },
            }
        )
    return {"by": by, "since": since, "until": until, "rows": out}


def purchases(db: Database, subscriber_id: int) -> dict:
    """A subscriber's orders (newest first) and lifetime revenue per currency."""
    orders = [
        dict(zip(ORDER_KEYS, r, strict=True))
        for r in db.execute(
            f"""WITH owned AS ({_owned("")})
                SELECT x.at, x.order_id, x.product, x.amount, x.refunded, x.currency, x.status,
                       c.slug
                FROM owned o JOIN sales x ON x.id = o.sale
                LEFT JOIN campaigns c ON c.id = x.campaign_id
                WHERE o.sid = ? ORDER BY x.at DESC""",
            [subscriber_id],
        )
    ]
    lifetime: dict[str, int] = {}
    for o in orders:
        if o["status"] in ("paid", "partially_refunded", "refunded"):
            lifetime[o["currency"]] = lifetime.get(o["currency"], 0) + o["amount"] - o["refunded"]
    return {"purchases": orders, "lifetime_revenue": lifetime}


def _silent_sql(threshold: int, list_id: int | None = None, ordered: bool = True):
    """Active members mailed ``threshold`` or more times with no purchase and no click:
    (list id, subscriber id, email, messages sent)."""
    sql = f"""
        SELECT m.list_id, s.id, s.email, sent.n
        FROM (SELECT subscriber_id, COUNT(*) AS n FROM deliveries WHERE state = 'sent'
              GROUP BY subscriber_id HAVING COUNT(*) >= ?) sent
        JOIN subscribers s ON s.id = sent.subscriber_id
        JOIN memberships m ON m.subscriber_id = s.id AND m.status = 'active'
        WHERE s.id NOT IN (SELECT sid FROM ({_owned(f"AND x.status IN {ORDER_SQL}")}))
          AND s.id NOT IN (SELECT d.subscriber_id FROM events e
                           JOIN deliveries d ON d.id = e.delivery_id WHERE e.kind = 'click')
          {"AND m.list_id = ?" if list_id is not None else ""}
        {"ORDER BY m.list_id, s.id" if ordered else ""}"""
    return sql, [threshold] + ([list_id] if list_id is not None else [])


def silent_by_list(db: Database, threshold: int) -> list[dict]:
    """Per list: how many active members are silent (mailed N+ times, no purchase, no click)."""
    sql, params = _silent_sql(threshold, ordered=False)
    names = dict(db.execute("SELECT id, slug FROM lists").fetchall())
    counts = db.execute(f"SELECT list_id, COUNT(*) FROM ({sql}) GROUP BY list_id", params)
    return sorted(
        ({"list": names[lid], "silent": n, "threshold": threshold} for lid, n in counts),
        key=lambda r: r["list"],
    )


def silent_subscribers(db: Database, threshold: int):
    """Every silent member, per list: {"list", "email", "sent"}, streamed."""
    sql, params = _silent_sql(threshold)
    names = dict(db.execute("SELECT id, slug FROM lists").fetchall())
    for list_id, _sid, email, n in db.execute(sql, params):
        yield {"list": names[list_id], "email": email, "sent": n}


def silent_members(db: Database, list_slug: str, threshold: int) -> list[dict]:
    lst = get_list(db, list_slug)
    sql, params = _silent_sql(threshold, lst["id"])
    return [{"email": email, "sent": n} for _lid, _sid, email, n in db.execute(sql, params)]


def prune_silent(db: Database, list_slug: str, threshold: int) -> int:
    """Move the list's silent members out (status ``pruned``, with the reason); how many."""
    lst = get_list(db, list_slug)
    sql, params = _silent_sql(threshold, lst["id"])
    stamp = now()
    reason = f"silent: mailed {threshold}+ times, no purchase, no click"
    with immediate(db):
        ids = [sid for _lid, sid, _email, _n in db.execute(sql, params).fetchall()]
        db.conn.executemany(
            """UPDATE memberships SET status = 'pruned', status_at = ?, status_reason = ?,
               updated = ? WHERE list_id = ? AND subscriber_id = ? AND status = 'active'""",
            [(stamp, reason, stamp, lst["id"], sid) for sid in ids],
        )
    return len(ids)
