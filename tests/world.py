"""Build lists, subscribers, campaigns and deliveries directly in the database.

Attribution and report tests need deliveries in exact states at exact times;
writing the rows as the sender does (see ``listkit/db.py``) keeps those tests
independent of sending.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database

from listkit.addresses import email_key
from listkit.config import load_settings
from listkit.db import now, unix
from listkit.mail.tracking import personal_coupon, row_token

T0 = "2026-11-01T10:00:00+00:00"
SALE_N = iter(range(1, 1000))


class World:
    def __init__(self, db: Database):
        self.db = db
        # The workspace's LISTKIT_SECRET, which a delivery's token is derived with.
        path = next(r[2] for r in db.execute("PRAGMA database_list") if r[1] == "main")
        self.secret = load_settings(Path(path).parent).secret_key()

    def token(self, delivery_id: int) -> str:
        """The token the delivery's messages carry."""
        (legacy,) = self.db.execute(
            "SELECT legacy_token FROM deliveries WHERE id = ?", [delivery_id]
        ).fetchone()
        return row_token(self.secret, delivery_id, legacy)

    def _id(self, sql: str, params: list) -> int:
        with self.db.conn:
            return self.db.execute(sql, params).lastrowid

    def list(self, slug: str, *emails: str, status: str = "active") -> int:
        row = self.db.execute("SELECT id FROM lists WHERE slug = ?", [slug]).fetchone()
        lid = (
            row[0]
            if row
            else self._id(
                "INSERT INTO lists (slug, title, created) VALUES (?, ?, ?)",
                [slug, slug.title(), now()],
            )
        )
        for email in emails:
            sid = self.subscriber(email)
            with self.db.conn:
                self.db.execute(
                    """INSERT OR REPLACE INTO memberships (list_id, subscriber_id, status, created)
                       VALUES (?, ?, ?, ?)""",
                    [lid, sid, status, now()],
                )
        return lid

    def subscriber(self, email: str) -> int:
        row = self.db.execute(
            "SELECT id FROM subscribers WHERE key = ?", [email_key(email)]
        ).fetchone()
        if row:
            return row[0]
        return self._id(
            "INSERT INTO subscribers (email, key, created) VALUES (?, ?, ?)",
            [email, email_key(email), now()],
        )

    def campaign(
        self,
        slug: str,
        *,
        offer: str = "launch",
        coupon: str | None = None,
        started: str | None = T0,
        days: int = 7,
        holdout: float = 0.0,
    ) -> int:
        return self._id(
            """INSERT INTO campaigns (slug, offer, lists, state, holdout, attribution_days,
               coupon, created, started) VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?)""",
            [slug, offer, json.dumps([]), holdout, days, coupon, now(), started],
        )

    def deliver(
        self,
        campaign_id: int,
        email: str,
        list_slug: str,
        *,
        state: str = "sent",
        sent_at: str | None = T0,
        coupon_base: str | None = None,
        code: int | None = None,
    ) -> dict:
        """One delivery (the subscriber joins the list); returns id, token, coupon."""
        lid = self.list(list_slug, email)
        did = self._id(
            """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state, last_code,
               sent_unix) VALUES (?, ?, ?, ?, ?, ?)""",
            [
                campaign_id,
                self.subscriber(email),
                lid,
                state,
                code,
                unix(sent_at) if state == "sent" and sent_at else None,
            ],
        )
        token = self.token(did)
        coupon = personal_coupon(coupon_base, token) if coupon_base else None
        return {"id": did, "token": token, "coupon": coupon}

    def details(self, email: str, *, fields=None, source=None, signup=None) -> None:
        sid = self.subscriber(email)
        with self.db.conn:
            if fields is not None:
                self.db.execute(
                    "UPDATE subscribers SET fields = ? WHERE id = ?", [json.dumps(fields), sid]
                )
            if source is not None:
                self.db.execute("UPDATE subscribers SET source = ? WHERE id = ?", [source, sid])
            if signup is not None:
                self.db.execute(
                    "UPDATE memberships SET consent_at = ? WHERE subscriber_id = ?", [signup, sid]
                )
                self.db.execute("UPDATE subscribers SET created = ? WHERE id = ?", [signup, sid])

    def sale(self, email: str, at: str, *, product="Guide", status="paid", amount=2900, **attr):
        with self.db.conn:
            self.db.execute(
                """INSERT INTO sales (source, order_id, status, amount, refunded, currency, at,
                   email, email_key, product, delivery_id, campaign_id, offer, method, imported)
                   VALUES ('test', ?, ?, ?, ?, 'USD', ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    f"o{next(SALE_N)}",
                    status,
                    amount,
                    amount if status == "refunded" else 0,
                    at,
                    email,
                    email_key(email),
                    product,
                    attr.get("delivery_id"),
                    attr.get("campaign_id"),
                    attr.get("offer"),
                    "token" if attr.get("delivery_id") else "none",
                    "2026-11-20T00:00:00+00:00",
                ],
            )

    def event(self, delivery_id: int, kind: str) -> None:
        with self.db.conn:
            self.db.execute(
                "INSERT INTO events (delivery_id, kind, at) VALUES (?, ?, ?)",
                [delivery_id, kind, "2026-11-01T11:00:00+00:00"],
            )


def tokens(db: Database, campaign: str | None = None) -> dict[str, str]:
    """{address: token} of the deliveries (of ``campaign``), as their messages carry them."""
    world = World(db)
    return {
        email: world.token(did)
        for did, email in db.execute(
            """SELECT d.id, s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
               JOIN campaigns c ON c.id = d.campaign_id WHERE c.slug = coalesce(?, c.slug)
               ORDER BY d.id""",
            [campaign],
        )
    }


def delivery_counts(db: Database) -> tuple[list, list]:
    """(the counts ``delivery_counts`` keeps, a GROUP BY over the deliveries): the same
    when the triggers kept them. Each as (campaign id, state, list id, n), sorted."""
    kept = db.execute(
        """SELECT campaign_id, state, list_id, n FROM delivery_counts
           WHERE n > 0 ORDER BY 1, 2, 3"""
    ).fetchall()
    grouped = db.execute(
        """SELECT campaign_id, state, list_id, COUNT(*) FROM deliveries
           GROUP BY campaign_id, state, list_id ORDER BY 1, 2, 3"""
    ).fetchall()
    return kept, grouped
