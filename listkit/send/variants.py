"""Offer tests: a campaign's audience split between offers, judged by revenue.

The rules: a subscriber's variant is a stable draw from the campaign and the
address (the same on every run and machine), independent of the holdout
draw; the held-out group sits beside the variants and gets nothing. A
variant's worth is its revenue per 1,000 delivered, where each delivered
subscriber counts with the revenue of every order from their address in the
attribution window (0 for most), so mailed and held-out groups are measured
alike. Intervals are 95% normal approximations for a mean (and for a
difference of two means, Welch's standard error); a winner is named only
when the difference's interval excludes zero.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlite_utils import Database

from listkit.db import immediate
from listkit.sales.money import format_minor
from listkit.sales.reports import period_bounds
from listkit.send.campaigns import Campaign, campaign_row, held_out, iter_audience
from listkit.vocab import ORDER_SQL, REVENUE_SQL

Z95 = 1.959964


def assign_variant(campaign_slug: str, key: str, variants: tuple[str, ...], split) -> str:
    """The variant for a subscriber: a stable draw, ``split`` the shares (summing to 1)."""
    digest = hashlib.sha256(f"{campaign_slug}\0variant\0{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for variant, share in zip(variants, split, strict=True):
        edge += share
        if u < edge:
            return variant
    return variants[-1]


def in_test_part(campaign_slug: str, key: str, share: float) -> bool:
    """Test-then-send: whether a subscriber is in the share that tries the variants."""
    digest = hashlib.sha256(f"{campaign_slug}\0test\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _share(x: float) -> str:
    return f"{x * 100:.3g}%"


def share_warnings(campaign: Campaign, keys: Iterable[str]) -> list[str]:
    """What an offer test's shares give nobody, for these readers (the audience, held-out
    ones left out): the test part of test-then-send, or a variant. A share too small
    for the audience rounds to no reader, and nothing says so when the test runs."""
    if not campaign.variants:
        return []
    keys = list(keys)
    if not keys:
        return []
    slug, n = campaign.slug, len(keys)
    part = keys
    if campaign.test_share:
        part = [k for k in keys if in_test_part(slug, k, campaign.test_share)]
        if not part:
            return [
                f"test_share {_share(campaign.test_share)} puts none of the {n:,} readers in "
                "the test part: nobody tries the variants, and the rest gets "
                f"{campaign.variants[0]} untested"
            ]
    drawn = Counter(assign_variant(slug, k, campaign.variants, campaign.split) for k in part)
    of = f"the {len(part):,} readers" + (" of the test part" if campaign.test_share else "")
    return [
        f"variant {variant} (split {_share(share)}) gets none of {of}: it cannot be judged; "
        "give it a larger share or drop it"
        for variant, share in zip(campaign.variants, campaign.split, strict=True)
        if not drawn[variant]
    ]


def campaign_share_warnings(db: Database, campaign: Campaign) -> list[str]:
    """``share_warnings`` for the readers the campaign chose (once queued) or would
    choose now."""
    if not campaign.variants:
        return []
    row = campaign_row(db, campaign.slug)
    keys = [
        key
        for (key,) in db.execute(
            """SELECT s.key FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
               WHERE d.campaign_id = ? AND d.state != 'held_out'""",
            [row["id"] if row else None],
        )
    ]
    if not keys:
        keys = [
            sub["key"]
            for sub, _slug, _title in iter_audience(db, campaign)
            if not held_out(campaign.slug, sub["key"], campaign.holdout)
        ]
    return share_warnings(campaign, keys)


def mean_interval(n: int, total: float, sumsq: float) -> dict:
    """Revenue per 1,000 (minor units) with a 95% interval, from n, sum and sum of squares."""
    if n == 0:
        return {"n": 0, "per_1000": None, "ci95": None, "var": 0.0}
    mean = total / n
    var = (sumsq - n * mean * mean) / (n - 1) if n > 1 else 0.0
    var = max(var, 0.0)
    se = math.sqrt(var / n)
    return {
        "n": n,
        "per_1000": 1000 * mean,
        "ci95": [1000 * (mean - Z95 * se), 1000 * (mean + Z95 * se)],
        "var": var,
    }


def difference(a: dict, b: dict) -> dict | None:
    """Per-1,000 difference a - b, its 95% interval, and the deliveries still needed."""
    if not a["n"] or not b["n"]:
        return None
    d = (a["per_1000"] - b["per_1000"]) / 1000
    se = math.sqrt(a["var"] / a["n"] + b["var"] / b["n"])
    lo, hi = d - Z95 * se, d + Z95 * se
    decided = lo > 0 or hi < 0
    more = 0
    if not decided:
        if d == 0 or a["var"] + b["var"] == 0:
            more = None  # no difference (or no buyers) yet: no size makes it show
        else:
            # Per group, the size at which an interval of this width excludes d's zero.
            need = math.ceil(Z95 * Z95 * (a["var"] + b["var"]) / (d * d))
            more = max(need - a["n"], 0) + max(need - b["n"], 0)
    return {
        "difference_per_1000": 1000 * d,
        "ci95": [1000 * lo, 1000 * hi],
        "decided": decided,
        "more_deliveries": more,
    }


def judge(groups: dict[str, dict]) -> dict:
    """The leader by revenue per 1,000 against every other variant; the winner if clear."""
    ranked = sorted(
        (g for g in groups.items() if g[1]["n"]),
        key=lambda item: -item[1]["per_1000"],
    )
    if len(ranked) < 2:
        return {"leader": ranked[0][0] if ranked else None, "winner": None, "versus": []}
    leader, stats = ranked[0]
    versus = []
    for name, other in ranked[1:]:
        versus.append({"variant": name, **(difference(stats, other) or {})})
    decided = all(v.get("decided") for v in versus)
    needed = [v["more_deliveries"] for v in versus if not v.get("decided")]
    return {
        "leader": leader,
        "winner": leader if decided else None,
        "versus": versus,
        "more_deliveries": None
        if decided
        else (None if any(n is None for n in needed) else max(needed)),
    }


def variant_report(db: Database, since: str | None = None, until: str | None = None) -> list[dict]:
    """For each campaign with variants (and the holdout beside them): the offer test's
    figures; ``since``/``until`` select the campaigns started in the period."""
    start, end = period_bounds(since, until)
    out = []
    campaigns = db.execute(
        """SELECT id, slug, started, attribution_days FROM campaigns
           WHERE started IS NOT NULL AND variants IS NOT NULL ORDER BY started, id"""
    ).fetchall()
    for cid, slug, started, days in campaigns:
        if (start and started < start) or (end and started >= end):
            continue
        window_end = (datetime.fromisoformat(started) + timedelta(days=days)).isoformat()
        currency = db.execute(
            f"""SELECT x.currency FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                JOIN sales x ON x.email_key = s.key
                WHERE d.campaign_id = ? AND x.at >= ? AND x.at <= ?
                AND x.status IN {REVENUE_SQL}
                GROUP BY x.currency ORDER BY SUM(x.amount - x.refunded) DESC LIMIT 1""",
            [cid, started, window_end],
        ).fetchone()
        currency = currency[0] if currency else None
        groups: dict[str, dict] = {}
        held = None
        for grp, n, buyers, total, sumsq in db.execute(
            f"""SELECT grp, COUNT(*), SUM(b), SUM(r), SUM(r * r) FROM (
                  SELECT CASE WHEN d.state = 'held_out' THEN NULL ELSE d.variant END AS grp,
                    EXISTS (SELECT 1 FROM sales x WHERE x.email_key = s.key AND x.at >= :start
                            AND x.at <= :end AND x.status IN {ORDER_SQL}) AS b,
                    coalesce((SELECT SUM(x.amount - x.refunded) FROM sales x
                              WHERE x.email_key = s.key AND x.at >= :start AND x.at <= :end
                              AND x.currency = :cur AND x.status IN {REVENUE_SQL}), 0) AS r
                  FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                  WHERE d.campaign_id = :cid AND (d.state = 'held_out'
                        OR (d.state = 'sent' AND d.variant IS NOT NULL
                            AND coalesce(d.part, 'test') = 'test')))
                GROUP BY grp ORDER BY grp""",
            {"start": started, "end": window_end, "cur": currency, "cid": cid},
        ):
            stats = {"buyers": buyers, "revenue": total, **mean_interval(n, total, sumsq)}
            if grp is None:
                held = stats
            else:
                groups[grp] = stats
        verdict = judge(groups)
        rows = [
            {"variant": name, "delivered": g["n"], "buyers": g["buyers"], "revenue": g["revenue"]}
            | {"per_1000": g["per_1000"], "ci95": g["ci95"]}
            for name, g in groups.items()
        ]
        out.append(
            {
                "campaign": slug,
                "currency": currency,
                "window_days": days,
                "variants": rows,
                "held_out": None
                if held is None
                else {
                    "held_out": held["n"],
                    "buyers": held["buyers"],
                    "revenue": held["revenue"],
                    "per_1000": held["per_1000"],
                    "ci95": held["ci95"],
                },
                **verdict,
            }
        )
    return out


def _money(value: float | None, currency: str | None) -> str:
    if value is None:
        return "-"
    if currency is None:
        return f"{value / 100:,.2f}" if value else "0"
    return format_minor(round(value), currency)


def table_rows(test: dict) -> list[dict]:
    """The test's groups as table rows for people (money formatted)."""
    cur = test["currency"]
    rows = []
    groups = list(test["variants"])
    if test["held_out"]:
        groups.append(
            {"variant": "(held out)", "delivered": test["held_out"]["held_out"]}
            | {k: test["held_out"][k] for k in ("buyers", "revenue", "per_1000", "ci95")}
        )
    for g in groups:
        ci = g["ci95"]
        rows.append(
            {
                "variant": g["variant"],
                "delivered": g["delivered"],
                "buyers": g["buyers"],
                "revenue": _money(g["revenue"], cur),
                "per_1000": _money(g["per_1000"], cur),
                "ci95": f"{_money(ci[0], cur)} to {_money(ci[1], cur)}" if ci else "-",
            }
        )
    return rows


def verdict_lines(test: dict) -> list[str]:
    """What the test says: each difference with its interval, and the winner or what is missing."""
    cur = test["currency"]
    lines = []
    for v in test["versus"]:
        if "difference_per_1000" not in v:
            continue
        ci = v["ci95"]
        lines.append(
            f"{test['leader']} - {v['variant']}: {_money(v['difference_per_1000'], cur)} per 1,000 "
            f"delivered (95% interval {_money(ci[0], cur)} to {_money(ci[1], cur)})"
        )
    if test["winner"]:
        lines.append(f"Winner: {test['winner']} (the interval of every difference excludes zero)")
    elif test["leader"] is None or not test["versus"]:
        lines.append("No winner: not every variant has been delivered yet.")
    elif test.get("more_deliveries") is None:
        lines.append(
            "No winner: the variants do not differ yet (no difference in revenue to measure)."
        )
    else:
        lines.append(
            f"No winner yet: the interval includes zero; about {test['more_deliveries']:,} more "
            f"deliveries would be needed to tell {test['leader']} apart at this difference."
        )
    return lines


def rest_due(db: Database, campaign, at: datetime) -> tuple[bool, str]:
    """Test-then-send: (whether the rest is due, when) once the test part has finished."""
    row = db.execute(
        "SELECT state, finished FROM campaigns WHERE slug = ?", [campaign.slug]
    ).fetchone()
    if row is None or row[0] != "testing" or not row[1]:
        return False, ""
    due_at = datetime.fromisoformat(row[1]) + (campaign.test_wait or timedelta())
    return at >= due_at, due_at.isoformat(timespec="minutes")


def release_rest(db: Database, campaign) -> dict:
    """Choose the offer for the rest by revenue and queue the rest with it.

    The leader by revenue per 1,000 delivered goes, clear winner or not (it is
    the best estimate there is); with no revenue at all, the first variant.
    """
    cid = db.execute("SELECT id FROM campaigns WHERE slug = ?", [campaign.slug]).fetchone()[0]
    test = next((t for t in variant_report(db) if t["campaign"] == campaign.slug), None)
    revenue = test is not None and any(v["revenue"] for v in test["variants"])
    chosen = test["leader"] if revenue and test["leader"] else campaign.variants[0]
    with immediate(db):
        n = db.execute(
            """UPDATE deliveries SET state = 'pending', variant = ?
               WHERE campaign_id = ? AND state = 'reserved'""",
            [chosen, cid],
        ).rowcount
        db.execute("UPDATE campaigns SET state = 'sending', finished = NULL WHERE id = ?", [cid])
    if not revenue:
        why = "no revenue from the test yet: the first variant"
    elif test["winner"]:
        why = "the winner by revenue (its interval excludes zero)"
    else:
        why = "the leader by revenue per 1,000, not a clear winner"
    return {"offer": chosen, "released": n, "why": why}
