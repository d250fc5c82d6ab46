"""Attribution: which delivery, campaign, list and offer earned a sale.

The rule, in order, first match wins:

1. token: the delivery token the shop carried through (``lk`` URL parameter,
   Stripe ``client_reference_id``, Lemon Squeezy custom data);
2. coupon: a per-recipient code names its delivery; an offer's campaign-wide
   code names the campaign (and the buyer's delivery in it, when there is one);
3. utm: the UTM campaign and content the shop kept (Gumroad's CSV keeps only
   those) name the campaign and list;
4. email: the buyer's address received a message of a campaign within that
   campaign's ``attribution_days`` before the sale (last touch wins);
5. none: unattributed, still counted in totals.

``decide`` is pure; ``attribute_all`` fetches candidates and stores results,
deterministically: running it twice gives the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from listkit.db import immediate

METHODS = ("token", "coupon", "utm", "email", "none")


@dataclass(frozen=True)
class Attribution:
    method: str = "none"
    delivery_id: int | None = None
    campaign_id: int | None = None
    list_id: int | None = None


@dataclass(frozen=True)
class Touch:
    """A delivery that may have earned the sale."""

    delivery_id: int
    campaign_id: int
    list_id: int
    sent_at: str | None
    attribution_days: int


def in_window(sale_at: str, sent_at: str | None, days: int) -> bool:
    """True if the sale came after the message and within ``days`` of it."""
    if sent_at is None:
        return False
    sale, sent = datetime.fromisoformat(sale_at), datetime.fromisoformat(sent_at)
    return sent <= sale <= sent + timedelta(days=days)


def last_touch(sale_at: str, touches: Iterable[Touch]) -> Touch | None:
    """The most recent delivery within its window before the sale (ties: highest id)."""
    eligible = [t for t in touches if in_window(sale_at, t.sent_at, t.attribution_days)]
    return max(eligible, key=lambda t: (t.sent_at, t.delivery_id), default=None)


def decide(
    sale_at: str,
    *,
    by_token: Touch | None = None,
    by_personal_coupon: Touch | None = None,
    by_campaign_coupon: tuple[int, list[Touch]] | None = None,
    by_utm: tuple[int, int | None, list[Touch]] | None = None,
    buyer_touches: Iterable[Touch] = (),
) -> Attribution:
    """Apply the order of the rules to candidates already looked up."""
    if by_token is not None:
        return Attribution("token", by_token.delivery_id, by_token.campaign_id, by_token.list_id)
    if by_personal_coupon is not None:
        t = by_personal_coupon
        return Attribution("coupon", t.delivery_id, t.campaign_id, t.list_id)
    if by_campaign_coupon is not None:
        campaign_id, touches = by_campaign_coupon
        mine = [t for t in touches if t.campaign_id == campaign_id]
        t = max(mine, key=lambda t: (t.sent_at or "", t.delivery_id), default=None)
        if t is not None:
            return Attribution("coupon", t.delivery_id, campaign_id, t.list_id)
        return Attribution("coupon", None, campaign_id, None)
    if by_utm is not None:
        campaign_id, list_id, touches = by_utm
        mine = [t for t in touches if t.campaign_id == campaign_id]
        t = max(mine, key=lambda t: (t.sent_at or "", t.delivery_id), default=None)
        if t is not None:
            return Attribution("utm", t.delivery_id, campaign_id, list_id or t.list_id)
        return Attribution("utm", None, campaign_id, list_id)
    t = last_touch(sale_at, buyer_touches)
    if t is not None:
        return Attribution("email", t.delivery_id, t.campaign_id, t.list_id)
    return Attribution()


_TOUCH = """SELECT d.id, d.campaign_id, d.list_id, d.sent_at, c.attribution_days
            FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id"""


def _touch(row) -> Touch | None:
    return Touch(*row) if row else None


def attribute_sale(db: Database, sale: dict) -> Attribution:
    """Look up the candidates of one sale and decide."""
    by_token = None
    if sale["token"]:
        by_token = _touch(
            db.execute(
                f"{_TOUCH} WHERE d.token = ? AND d.state != 'held_out'", [sale["token"].lower()]
            ).fetchone()
        )
    buyer: list[Touch] = []
    if sale["email_key"]:
        buyer = [
            Touch(*r)
            for r in db.execute(
                f"""{_TOUCH} JOIN subscribers s ON s.id = d.subscriber_id
                    WHERE s.key = ? AND d.state = 'sent'""",
                [sale["email_key"]],
            )
        ]
    by_personal = by_campaign = by_utm = None
    coupon = (sale["coupon"] or "").strip()
    if coupon:
        by_personal = _touch(
            db.execute(
                f"{_TOUCH} WHERE d.coupon = ? COLLATE NOCASE AND d.state = 'sent'", [coupon]
            ).fetchone()
        )
        row = db.execute(
            """SELECT id FROM campaigns WHERE coupon = ? COLLATE NOCASE
               AND started IS NOT NULL AND started <= ? ORDER BY started DESC, id DESC LIMIT 1""",
            [coupon, sale["at"]],
        ).fetchone()
        if row:
            by_campaign = (row[0], buyer)
    if sale["utm_campaign"]:
        row = db.execute(
            "SELECT id FROM campaigns WHERE slug = ?", [sale["utm_campaign"]]
        ).fetchone()
        if row:
            lst = db.execute(
                "SELECT id FROM lists WHERE slug = ?", [sale["utm_content"] or ""]
            ).fetchone()
            by_utm = (row[0], lst[0] if lst else None, buyer)
    return decide(
        sale["at"],
        by_token=by_token,
        by_personal_coupon=by_personal,
        by_campaign_coupon=by_campaign,
        by_utm=by_utm,
        buyer_touches=buyer,
    )


def attribute_all(db: Database, ids: Iterable[int] | None = None) -> dict[str, int]:
    """(Re)compute attribution for the given sales, or all; counts per method."""
    where, params = "", []
    if ids is not None:
        ids = list(ids)
        if not ids:
            return {}
        where, params = "WHERE id IN (SELECT value FROM json_each(?))", [json.dumps(ids)]
    keys = ("id", "at", "token", "coupon", "email_key", "utm_campaign", "utm_content")
    sales = [
        dict(zip(keys, r, strict=True))
        for r in db.execute(f"SELECT {', '.join(keys)} FROM sales {where} ORDER BY id", params)
    ]
    results = {m: 0 for m in METHODS}
    updates = []
    offers = dict(db.execute("SELECT id, offer FROM campaigns").fetchall())
    for sale in sales:
        a = attribute_sale(db, sale)
        results[a.method] += 1
        updates.append(
            (
                a.delivery_id,
                a.campaign_id,
                a.list_id,
                offers.get(a.campaign_id),
                a.method,
                sale["id"],
            )
        )
    with immediate(db):
        db.conn.executemany(
            """UPDATE sales SET delivery_id = ?, campaign_id = ?, list_id = ?, offer = ?,
               method = ? WHERE id = ?""",
            updates,
        )
    return {m: n for m, n in results.items() if n}
