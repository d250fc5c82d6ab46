"""Attribution: which delivery, campaign, list and offer earned a sale.

The rule, in order, first match wins:

1. token: the delivery token the shop carried through (``lk`` URL parameter,
   Stripe ``client_reference_id``, Lemon Squeezy custom data);
2. coupon: a per-recipient code names its delivery; an offer's campaign-wide
   code names the campaign (and the buyer's delivery in it when there is one,
   else the list the sale's ``utm_content`` names);
3. utm: the UTM campaign and content the shop kept (Gumroad's CSV keeps only
   those) name the campaign and list;
4. click: the buyer clicked a tracked link (a person's ``click`` event, not a
   scanner's) of a message within its campaign's ``attribution_days`` before
   the sale (the latest such message wins);
5. email: the buyer's address received a message of a campaign within that
   campaign's ``attribution_days`` before the sale (last touch wins);
6. none: unattributed, still counted in totals.

``decide`` is pure; ``attribute_all`` fetches every candidate with a few
set-wise queries (one per rule, never one per sale) and stores the results.
Deterministic: ties go to the latest send (``sent_unix``), then the highest delivery
id, so running it twice gives the same answer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from listkit.audience.deliveries import coupon_deliveries, delivery_ids
from listkit.audience.enrollments import on_sales
from listkit.db import ISO_SQL, immediate
from listkit.mail.tracking import is_token_head
from listkit.vocab import ATTRIBUTION_METHODS


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
    clicked_at: str | None = None  # the first time a person clicked one of its links


def in_window(sale_at: str, sent_at: str | None, days: int) -> bool:
    """True if the sale came after the message and within ``days`` of it."""
    if sent_at is None:
        return False
    sale, sent = datetime.fromisoformat(sale_at), datetime.fromisoformat(sent_at)
    return sent <= sale <= sent + timedelta(days=days)


def _latest(touches: Iterable[Touch]) -> Touch | None:
    return max(touches, key=lambda t: (t.sent_at or "", t.delivery_id), default=None)


def last_touch(sale_at: str, touches: Iterable[Touch]) -> Touch | None:
    """The most recent delivery within its window before the sale (ties: highest id)."""
    return _latest(t for t in touches if in_window(sale_at, t.sent_at, t.attribution_days))


def _sent_before(sale_at: str, touches: Iterable[Touch], campaigns: Iterable[int]) -> list[Touch]:
    wanted = set(campaigns)
    sale = datetime.fromisoformat(sale_at)
    return [
        t
        for t in touches
        if t.campaign_id in wanted
        and t.sent_at is not None
        and datetime.fromisoformat(t.sent_at) <= sale
    ]


def decide(
    sale_at: str,
    *,
    token: Touch | None = None,
    personal_coupon: Touch | None = None,
    coupon_campaigns: Sequence[int] = (),
    utm_campaign: int | None = None,
    utm_list: int | None = None,
    buyer: Iterable[Touch] = (),
) -> Attribution:
    """Apply the rules, in order, to candidates already looked up.

    ``coupon_campaigns``: campaigns whose coupon the sale used, started before
    the sale, most recent first. ``utm_campaign`` / ``utm_list``: the campaign
    and list the sale's UTM parameters name (ids, or None). ``buyer``: the
    buyer's sent deliveries.
    """
    if token is not None:
        return Attribution("token", token.delivery_id, token.campaign_id, token.list_id)
    if personal_coupon is not None:
        t = personal_coupon
        return Attribution("coupon", t.delivery_id, t.campaign_id, t.list_id)
    buyer = list(buyer)
    if coupon_campaigns:
        t = _latest(_sent_before(sale_at, buyer, coupon_campaigns))
        if t is not None:
            return Attribution("coupon", t.delivery_id, t.campaign_id, t.list_id)
        campaign = coupon_campaigns[0]
        same = utm_campaign is None or utm_campaign == campaign
        return Attribution("coupon", None, campaign, utm_list if same else None)
    if utm_campaign is not None:
        t = _latest(_sent_before(sale_at, buyer, [utm_campaign]))
        if t is not None:
            return Attribution("utm", t.delivery_id, utm_campaign, utm_list or t.list_id)
        return Attribution("utm", None, utm_campaign, utm_list)
    sale = datetime.fromisoformat(sale_at)
    t = last_touch(
        sale_at,
        (b for b in buyer if b.clicked_at and datetime.fromisoformat(b.clicked_at) <= sale),
    )
    if t is not None:
        return Attribution("click", t.delivery_id, t.campaign_id, t.list_id)
    t = last_touch(sale_at, buyer)
    if t is not None:
        return Attribution("email", t.delivery_id, t.campaign_id, t.list_id)
    return Attribution()


def personal_coupon_prefix(coupon: str) -> str | None:
    """The token prefix a per-recipient code carries (``LAUNCH30-ABCDEFGH`` -> ``abcdefgh``).

    Matches ``tracking.personal_coupon``: ``f"{base}-{token[:8].upper()}"``. The
    delivery is then found from the prefix alone (``deliveries.coupon_deliveries``):
    a derived token's first 8 characters stand for its id, a legacy token's are
    looked up in its index.
    """
    _base, sep, suffix = coupon.strip().rpartition("-")
    suffix = suffix.lower()
    return suffix if sep and is_token_head(suffix) else None


_TOUCH = f"d.id, d.campaign_id, d.list_id, {ISO_SQL.format('d.sent_unix')}, c.attribution_days"
_SALES = ("id", "at", "token", "coupon", "email_key", "utm_campaign", "utm_content")


def _touches(db: Database, ids: Iterable[int]) -> dict[int, Touch]:
    """The deliveries of ``ids`` that can have earned a sale (not held out), as touches."""
    return {
        row[0]: Touch(*row)
        for row in db.execute(
            f"""SELECT {_TOUCH} FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
                WHERE d.id IN (SELECT value FROM json_each(?)) AND d.state != 'held_out'""",
            [json.dumps(sorted(set(ids)))],
        )
    }


def _candidates(
    db: Database, secret: bytes, sales: list[dict], where: str, params: list
) -> dict[str, dict]:
    """Every candidate of the selected sales, by rule: one query per rule."""
    named = delivery_ids(db, secret, {s["id"]: s["token"] for s in sales if s["token"]})
    touches = _touches(db, named.values())
    by_token = {sid: touches[did] for sid, did in named.items() if did in touches}
    buyer: dict[int, list[Touch]] = defaultdict(list)
    for sid, *rest in db.execute(
        f"""SELECT s.id, {_TOUCH}, (SELECT MIN(e.at) FROM events e
                                    WHERE e.delivery_id = d.id AND e.kind = 'click')
            FROM sales s
            JOIN subscribers sub ON sub.key = s.email_key
            JOIN deliveries d ON d.subscriber_id = sub.id
            JOIN campaigns c ON c.id = d.campaign_id
            WHERE s.email_key IS NOT NULL AND d.state = 'sent' {where}""",
        params,
    ):
        buyer[sid].append(Touch(*rest))
    return {"token": by_token, "buyer": buyer}


def _personal_coupons(db: Database, secret: bytes, coupons: dict[int, str]) -> dict[int, Touch]:
    """The delivery each sale's personal coupon names (the lowest id, should a legacy
    token's prefix name two)."""
    prefixes = {sid: p for sid, c in coupons.items() if (p := personal_coupon_prefix(c))}
    named = coupon_deliveries(db, secret, prefixes)
    touches = _touches(db, (did for ids in named.values() for did in ids))
    found: dict[int, Touch] = {}
    for sid, ids in named.items():
        mine = [touches[did] for did in sorted(ids) if did in touches]
        if mine:
            found[sid] = mine[0]
    return found


def _campaign_offers(db: Database, campaigns: list) -> dict[int, str | None]:
    """The offer a campaign's sale without a delivery is credited to: the campaign's offer;
    for an offer test, only a variant that was delivered (its own offer when it was,
    else the variant delivered most), never one that mailed nobody (None if none did)."""
    offers = {cid: offer for cid, _slug, offer, _coupon, _started in campaigns}
    delivered: dict[int, dict[str, int]] = defaultdict(dict)
    tests = [cid for (cid,) in db.execute("SELECT id FROM campaigns WHERE variants IS NOT NULL")]
    for cid, variant, n in db.execute(
        """SELECT campaign_id, variant, COUNT(*) FROM deliveries
           WHERE campaign_id IN (SELECT value FROM json_each(?)) AND state = 'sent'
           AND variant IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""",
        [json.dumps(tests)],
    ):
        delivered[cid][variant] = n
    for cid in tests:
        if offers.get(cid) not in delivered[cid]:
            offers[cid] = next(iter(delivered[cid]), None)
    return offers


def attribute_all(db: Database, secret: bytes, ids: Iterable[int] | None = None) -> dict[str, int]:
    """(Re)compute attribution for the given sales, or all, in one transaction; counts per
    method. ``secret`` (LISTKIT_SECRET) tells which delivery a token names."""
    with immediate(db):
        return attribute_sales(db, secret, ids)


def attribute_sales(
    db: Database, secret: bytes, ids: Iterable[int] | None = None
) -> dict[str, int]:
    """``attribute_all`` without its transaction: for callers already inside one."""
    where, params = "", []
    if ids is not None:
        ids = list(ids)
        if not ids:
            return {}
        where, params = "AND s.id IN (SELECT value FROM json_each(?))", [json.dumps(ids)]
    sales = [
        dict(zip(_SALES, r, strict=True))
        for r in db.execute(
            f"SELECT {', '.join('s.' + k for k in _SALES)} FROM sales s WHERE 1 {where} "
            "ORDER BY s.id",
            params,
        )
    ]
    found = _candidates(db, secret, sales, where, params)
    personal = _personal_coupons(db, secret, {s["id"]: s["coupon"] for s in sales if s["coupon"]})
    campaigns = db.execute(
        "SELECT id, slug, offer, coupon, started FROM campaigns ORDER BY started DESC, id DESC"
    ).fetchall()
    offers = _campaign_offers(db, campaigns)
    slugs = {slug: cid for cid, slug, _offer, _coupon, _started in campaigns}
    lists = dict(db.execute("SELECT slug, id FROM lists").fetchall())
    by_coupon: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cid, _slug, _offer, coupon, started in campaigns:
        if coupon and started:
            by_coupon[coupon.strip().casefold()].append((cid, started))

    results = {m: 0 for m in ATTRIBUTION_METHODS}
    updates = []
    for sale in sales:
        at = datetime.fromisoformat(sale["at"])
        coupon = (sale["coupon"] or "").strip().casefold()
        a = decide(
            sale["at"],
            token=found["token"].get(sale["id"]),
            personal_coupon=personal.get(sale["id"]),
            coupon_campaigns=[
                cid
                for cid, started in by_coupon.get(coupon, ())
                if datetime.fromisoformat(started) <= at
            ],
            utm_campaign=slugs.get(sale["utm_campaign"] or ""),
            utm_list=lists.get(sale["utm_content"] or ""),
            buyer=found["buyer"].get(sale["id"], ()),
        )
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
    db.conn.executemany(
        # A delivery of an offer test carries its own offer (its variant).
        """UPDATE sales SET delivery_id = ?1, campaign_id = ?2, list_id = ?3,
           offer = coalesce((SELECT variant FROM deliveries WHERE id = ?1), ?4),
           method = ?5 WHERE id = ?6""",
        updates,
    )
    # An `offer:` trigger or exit of a sequence is known once the sale is attributed.
    on_sales(db, [sale["id"] for sale in sales])
    return {m: n for m, n in results.items() if n}
