"""Reports: which lists, offers and campaigns produce revenue, and which produce nothing.

The rules: revenue is counted per currency in integer minor units, never
converted; refunds reduce it; unattributed sales still count in the totals;
every figure is an aggregate computed in SQL (the reports stay fast on
millions of deliveries), and the Python here only arranges them. A list no
campaign of the period sent anything through is "not mailed", never a list
that "earned nothing", unless its readers were mailed through another list of
the campaign: then it says which. A reader's unsubscribe counts once, against
the message it came from, however they said it (one-click, this list,
everything).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TypeVar

from sqlite_utils import Database

from listkit.audience.lists import MAILABLE_MEMBER, member_counts
from listkit.audience.suppressions import BOUNCED_DELIVERIES, UNSUBSCRIBED_DELIVERIES
from listkit.errors import InputError
from listkit.vocab import (
    BOUNCE_REASONS,
    HELD_OUT,
    ORDER_SQL,
    RESPECT_SQL,
    REVENUE_SQL,
    UNSUBSCRIBED,
)

BY = ("list", "offer", "campaign")
T = TypeVar("T")


Z95 = 1.959964
NO_LIST = "(no list)"
NO_OFFER = "(no offer)"
REVENUE = f"coalesce(SUM(amount - refunded) FILTER (WHERE status IN {REVENUE_SQL}), 0)"


def period_bounds(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """``--since``/``--until`` dates as the ISO start and the (exclusive) ISO end."""

    def parse(value: str, name: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InputError(f"--{name} {value!r} is not a date such as 2026-11-01") from None

    start = parse(since, "since").isoformat() if since else None
    end = (parse(until, "until") + timedelta(days=1)).isoformat() if until else None
    if start and end and start >= end:
        raise InputError("--since must come before --until")
    return start, end


def per_thousand(revenue: dict[str, int], sent: int) -> dict[str, int]:
    """Revenue per 1,000 messages sent, per currency, rounded to the minor unit."""
    if not sent:
        return {}
    return {cur: (amount * 1000 + sent // 2) // sent for cur, amount in revenue.items()}


def _wilson(buyers: int, n: int) -> tuple[float, float]:
    """Wilson's score interval for a proportion, at 95%."""
    p, z2 = buyers / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def lift(mailed: int, mailed_buyers: int, held: int, held_buyers: int) -> dict:
    """Purchase rates of the mailed and held-out groups, their difference and a 95% interval.

    The interval is Newcombe's hybrid score interval (1998, method 10) built
    from each group's Wilson interval. Unlike the normal approximation it
    stays honest for the small held-out groups and zero buyers that a
    newsletter's holdout usually has: nobody buying in either group is "no
    information yet", not a certain zero.
    """
    p1 = mailed_buyers / mailed if mailed else 0.0
    p0 = held_buyers / held if held else 0.0
    result = {
        "mailed": mailed,
        "mailed_buyers": mailed_buyers,
        "mailed_rate": p1,
        "held_out": held,
        "held_out_buyers": held_buyers,
        "held_out_rate": p0,
        "difference": p1 - p0,
        "ci95": None,
    }
    if mailed and held:
        l1, u1 = _wilson(mailed_buyers, mailed)
        l0, u0 = _wilson(held_buyers, held)
        d = p1 - p0
        result["ci95"] = [
            d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
        ]
    return result


@dataclass
class Period:
    """What a report's period selects, read once and shared by its groupings: the
    campaigns (all of them, by id), the lists' slugs, and which campaigns started in
    the period; ``start``/``end`` bound it (ISO dates, ``end`` exclusive), both None
    for all time. Figures every grouping shares are kept in ``shared`` once computed."""

    since: str | None
    until: str | None
    start: str | None
    end: str | None
    campaigns: dict[int, dict]
    list_names: dict[int, str]
    in_period: list[int]
    shared: dict = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        """Whether the period is bounded (else it is all time)."""
        return bool(self.start or self.end)

    @property
    def only(self) -> list[int] | None:
        """The campaigns of the period, or None when the period is all time."""
        return self.in_period if self.limited else None

    @property
    def cparams(self) -> list:
        """The parameter ``campaign_filter`` takes: none when the period is all time."""
        return [json.dumps(self.in_period)] if self.limited else []

    def campaign_filter(self, prefix: str = "AND", column: str = "campaign_id") -> str:
        """SQL keeping the deliveries of the period's campaigns (with ``cparams``)."""
        if not self.limited:
            return ""
        return f"{prefix} {column} IN (SELECT value FROM json_each(?))"

    def sale_filter(self) -> tuple[str, list]:
        """The WHERE clause keeping the sales made in the period, and its parameters."""
        clauses, params = [], []
        if self.start:
            clauses.append("at >= ?")
            params.append(self.start)
        if self.end:
            clauses.append("at < ?")
            params.append(self.end)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def group(self, by: str, key) -> tuple[str, str]:
        """The report row a delivery's list or campaign id falls in, grouped ``by``."""
        return _group(by, key, self.campaigns, self.list_names)

    def once(self, name: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, computed the first time ``name`` is asked for in this period."""
        if name not in self.shared:
            self.shared[name] = compute()
        return self.shared[name]


def read_period(db: Database, since: str | None, until: str | None) -> Period:
    """The period ``since``..``until`` (days, both included) and the campaigns and lists
    a report of it names. InputError for a date that is not one."""
    start, end = period_bounds(since, until)
    campaigns = {
        cid: {"slug": slug, "offer": offer, "started": started, "days": days, "holdout": holdout}
        for cid, slug, offer, started, days, holdout in db.execute(
            "SELECT id, slug, offer, started, attribution_days, holdout FROM campaigns"
        )
    }
    in_period = [
        cid
        for cid, c in campaigns.items()
        if c["started"]
        and (start is None or c["started"] >= start)
        and (end is None or c["started"] < end)
    ]
    list_names = dict(db.execute("SELECT id, slug FROM lists").fetchall())
    return Period(since, until, start, end, campaigns, list_names, in_period)


def build_report(
    db: Database, by: str = "list", since: str | None = None, until: str | None = None
) -> dict:
    """The report of the period grouped ``by`` list, offer or campaign (what ``listkit
    report --json`` prints)."""
    return build_reports(db, (by,), since, until)[by]


def build_reports(
    db: Database, groupings: tuple[str, ...], since: str | None = None, until: str | None = None
) -> dict[str, dict]:
    """The reports of one period, one per grouping (list, offer, campaign), built
    together: what they share (the period, the holdouts, the complaint warnings, the
    counts per campaign) is read once."""
    for by in groupings:
        if by not in BY:
            raise InputError(f"--by must be one of {', '.join(BY)}")
    period = read_period(db, since, until)
    return {by: _grouped_report(db, period, by) for by in groupings}


def _grouped_report(db: Database, period: Period, by: str) -> dict:
    """One report: its rows grouped ``by``, the totals, the idle lists and the rest."""
    rows: dict = defaultdict(_empty_row)
    column = "list_id" if by == "list" else "campaign_id"
    figures = period.once(column, lambda: _delivery_figures(db, period, column))
    for key, counts in figures.items():
        row = rows[period.group(by, key)]
        for name, n in counts.items():
            # A list's audience is its active members (below), not its deliveries.
            if not (by == "list" and name == "audience"):
                row[name] += n
    if by == "offer":
        credit_variants(db, rows, period.campaigns, period.only)
    titles = _list_rows(db, period, rows) if by == "list" else {}
    totals, days = _count_sales(db, period, by, rows)
    result_rows = [
        _finish_row(by, name, row, titles)
        for (_kind, name), row in sorted(rows.items(), key=lambda item: str(item[0][1]))
    ]
    idle = _idle_lists(db, period, by, result_rows)
    if by == "list":
        for r in result_rows:
            r["mailed_through"] = idle["through"].get(r["list"], {}).get("through", {})
    report = {
        "by": by,
        "since": period.since,
        "until": period.until,
        "rows": result_rows,
        "totals": totals,
        "lists_without_revenue": idle["lists_without_revenue"],
        "lists_not_mailed": idle["lists_not_mailed"],
        "lists_mailed_through_others": idle["lists_mailed_through_others"],
        "holdout": period.once("holdout", lambda: _holdouts(db, period)),
        "complaint_warnings": period.once(
            "complaint_warnings", lambda: _complaint_warnings(db, period)
        ),
        "over_time": [
            {"day": day, "currency": cur, "revenue": rev, "attributed": attr}
            for (day, cur), (rev, attr) in sorted(days.items())
        ],
    }
    # Only when there are some: without LISTKIT_QUIET_AFTER_PURCHASE and
    # LISTKIT_FREQUENCY the report is what it always was.
    skipped = period.once("skipped_for_reader", lambda: _skipped_for_reader(db, period))
    if skipped:
        report["skipped_for_reader"] = skipped
    return report


def _skipped_for_reader(db: Database, period: Period) -> list[dict]:
    """Selling messages skipped for their reader (a quiet period after a purchase or the
    frequency cap would have kept them past their deadline), per campaign, list and
    reason: by the state index, campaign by campaign."""
    ids = period.in_period if period.limited else list(period.campaigns)
    return [
        {
            "campaign": period.campaigns[cid]["slug"],
            "list": period.list_names.get(lid),
            "reason": reason,
            "messages": n,
        }
        for cid, lid, reason, n in db.execute(
            f"""SELECT campaign_id, list_id, last_reply, COUNT(*) FROM deliveries
                WHERE campaign_id IN (SELECT value FROM json_each(?)) AND state = 'skipped'
                AND last_reply IN {RESPECT_SQL}
                GROUP BY campaign_id, list_id, last_reply""",
            [json.dumps(ids)],
        )
    ]


def _empty_row() -> dict:
    return {
        "audience": 0,
        "sent": 0,
        "failed": 0,
        "held_out": 0,
        "unsubscribed": 0,
        "bounced": 0,
        "complaints": 0,
        "clicks": 0,
        "clicked_buyers": 0,
        "orders": 0,
        "revenue": {},
        "methods": {},
    }


def _delivery_figures(db: Database, period: Period, column: str) -> dict:
    """The period's deliveries counted per ``column`` (list_id or campaign_id): all of
    them (``audience``), per state, and those readers answered (unsubscribed, bounced,
    complained, clicked, clicked and bought). Arranged from the counts per campaign and
    list (``_delivery_counts``, ``_answers``), which every grouping shares."""
    figures: dict = defaultdict(lambda: defaultdict(int))
    at = 0 if column == "campaign_id" else 1
    for cid, state, lid, n in period.once("deliveries", lambda: _delivery_counts(db, period)):
        key = (cid, lid)[at]
        figures[key]["audience"] += n
        if state in ("sent", "failed", "held_out"):
            figures[key][state] += n
    answers = period.once("answers", lambda: _answers(db, period))
    for pair, counts in answers["counts"].items():
        for name, n in counts.items():
            figures[pair[at]][name] += n
    # A reader who unsubscribed through two messages of a group counts once in it.
    readers: dict = defaultdict(set)
    for cid, lid, sid in answers["unsubscribed"]:
        readers[(cid, lid)[at]].add(sid)
    for key, who in readers.items():
        figures[key]["unsubscribed"] += len(who)
    return figures


def _delivery_counts(db: Database, period: Period) -> list[tuple[int, str, int, int]]:
    """(campaign id, state, list id, deliveries) of the period, from the counts the
    database keeps beside the deliveries (``delivery_counts``, m024): never a pass
    over millions of rows."""
    return db.execute(
        f"""SELECT campaign_id, state, list_id, n FROM delivery_counts WHERE n > 0
            {period.campaign_filter("AND")}""",
        period.cparams,
    ).fetchall()


def _answers(db: Database, period: Period) -> dict:
    """What readers answered to the period's deliveries, per (campaign id, list id):
    ``counts``, the deliveries that bounced, complained, were clicked, were clicked and
    bought; ``unsubscribed``, (campaign id, list id, subscriber id) of each reader who
    unsubscribed through a delivery. Each query starts from the answers (events,
    suppressions) and looks up only their deliveries."""
    in_period, cparams = period.campaign_filter("AND", "d.campaign_id"), period.cparams
    counts: dict = defaultdict(lambda: defaultdict(int))
    # Messages that bounced (refused by the server or reported later, even when the
    # address had already been suppressed by another campaign's bounce).
    for cid, lid, n in db.execute(
        f"""SELECT d.campaign_id, d.list_id, COUNT(*) FROM deliveries d
            WHERE d.id IN ({BOUNCED_DELIVERIES}) {in_period} GROUP BY 1, 2""",
        [json.dumps(list(BOUNCE_REASONS)), *cparams],
    ):
        counts[(cid, lid)]["bounced"] = n
    # Deliveries with an event of a kind: complaints (spam reports) and a person's
    # clicks (kind 'click'; scanners are 'click_bot'); of those clicked, the ones a
    # sale is attributed to (click-to-buy is their share).
    for cid, lid, complaints, clicks, clicked_buyers in db.execute(
        f"""SELECT d.campaign_id, d.list_id,
                   COUNT(DISTINCT d.id) FILTER (WHERE e.kind = 'complaint'),
                   COUNT(DISTINCT d.id) FILTER (WHERE e.kind = 'click'),
                   COUNT(DISTINCT d.id) FILTER (WHERE e.kind = 'click' AND d.id IN
                       (SELECT delivery_id FROM sales WHERE status IN {ORDER_SQL}))
            FROM events e JOIN deliveries d ON d.id = e.delivery_id
            WHERE e.kind IN ('complaint', 'click') {in_period} GROUP BY 1, 2""",
        cparams,
    ):
        counts[(cid, lid)].update(
            complaints=complaints, clicks=clicks, clicked_buyers=clicked_buyers
        )
    # Readers who unsubscribed, and through which delivery's campaign and list.
    unsubscribed = db.execute(
        f"""SELECT DISTINCT d.campaign_id, d.list_id, d.subscriber_id FROM deliveries d
            WHERE d.id IN ({UNSUBSCRIBED_DELIVERIES}) {in_period}""",
        [json.dumps([UNSUBSCRIBED]), *cparams],
    ).fetchall()
    return {"counts": counts, "unsubscribed": unsubscribed}


def _list_rows(db: Database, period: Period, rows: dict) -> dict[str, str]:
    """By list: a row for every list, its audience the active members; returns the
    lists' titles by slug."""
    titles = {}
    members = period.once("members", lambda: member_counts(db))
    for lid, slug, title in db.execute("SELECT id, slug, title FROM lists"):
        rows[("list", slug)]["audience"] = members.get(lid, {}).get("active", 0)
        titles[slug] = title
    return titles


def _count_sales(db: Database, period: Period, by: str, rows: dict) -> tuple[dict, dict]:
    """Sales: one pass over the table, grouped finely enough for every figure. Adds
    orders, revenue and attribution methods to ``rows``; returns the totals and the
    revenue per (day, currency) as [all, attributed]."""
    sale_where, sparams = period.sale_filter()
    totals = {"orders": 0, "revenue": {}, "unattributed": {"orders": 0, "revenue": {}}}
    days: dict[tuple[str, str], list[int]] = {}
    # A whole-table scan reads the sales in file order; walking an index to every
    # row costs more. A period uses the index on `at` instead.
    scan = "" if sale_where else "NOT INDEXED"
    # By offer, a sale's own offer (an offer test's sale carries its variant's).
    sale_column = {"list": "list_id", "offer": "offer"}.get(by, "campaign_id")
    for key, currency, method, day, attributed, orders, revenue, n in db.execute(
        f"""SELECT {sale_column}, currency, method, substr(at, 1, 10), campaign_id IS NOT NULL,
                   COUNT(*) FILTER (WHERE status IN {ORDER_SQL}), {REVENUE}, COUNT(*)
            FROM sales {scan} {sale_where} GROUP BY 1, 2, 3, 4, 5""",
        sparams,
    ):
        totals["orders"] += orders
        if revenue or currency in totals["revenue"]:
            totals["revenue"][currency] = totals["revenue"].get(currency, 0) + revenue
        per_day = days.setdefault((day, currency), [0, 0])
        per_day[0] += revenue
        per_day[1] += revenue if attributed else 0
        if key is None and by in ("list", "offer") and attributed:
            # Attributed to a campaign (its coupon) through no known list, or to an offer
            # test none of whose variants was delivered.
            target = rows[(by, NO_LIST if by == "list" else NO_OFFER)]
            target["methods"][method] = target["methods"].get(method, 0) + n
        elif key is None:
            target = totals["unattributed"]
        else:
            target = rows[("offer", key) if by == "offer" else period.group(by, key)]
            target["methods"][method] = target["methods"].get(method, 0) + n
        target["orders"] += orders
        if revenue or currency in target["revenue"]:
            target["revenue"][currency] = target["revenue"].get(currency, 0) + revenue
    return totals, days


def _finish_row(by: str, name: str, row: dict, titles: dict[str, str]) -> dict:
    """A report row as printed: its name (and title), its counts and the rates."""
    row = {
        by: name,
        **({"title": titles.get(name)} if by == "list" else {}),
        **row,
        "conversion_rate": row["orders"] / row["sent"] if row["sent"] else None,
        # Bounces of the messages tried (sent or refused); complaints of those sent.
        "bounce_rate": (
            row["bounced"] / (row["sent"] + row["failed"]) if row["sent"] + row["failed"] else None
        ),
        "complaint_rate": row["complaints"] / row["sent"] if row["sent"] else None,
        # Deliveries that clicked and then bought, of those that clicked (<= 100%).
        "click_to_buy": row["clicked_buyers"] / row["clicks"] if row["clicks"] else None,
        "revenue_per_1000": per_thousand(row["revenue"], row["sent"]),
    }
    if by == "list":
        # Mailed: a campaign of the period sent at least one message through it.
        row["mailed"] = None if name == NO_LIST else row["sent"] > 0
    return row


def _idle_lists(db: Database, period: Period, by: str, result_rows: list[dict]) -> dict:
    """The lists with active members and nothing earned: mailed in the period
    (``lists_without_revenue``), not mailed (``lists_not_mailed``), or not mailed while
    their readers were, through another list (``lists_mailed_through_others``);
    ``through``: those, by slug."""
    if by == "list":
        idle = [
            (r["mailed"], {"list": r["list"], "active": r["audience"], "sent": r["sent"]})
            for r in result_rows
            if r["mailed"] is not None and r["audience"] > 0 and not any(r["revenue"].values())
        ]
    else:
        idle = period.once("lists_without_revenue", lambda: _lists_without_revenue(db, period))
    # Lists no message of the period went through, and the readers of theirs that
    # were mailed through another list all the same.
    unmailed = {entry["list"]: entry for mailed, entry in idle if not mailed}
    through = period.once(
        ("mailed_through", *unmailed), lambda: _mailed_through(db, list(unmailed), period.cparams)
    )
    return {
        "lists_without_revenue": [entry for mailed, entry in idle if mailed],
        "lists_not_mailed": [entry for name, entry in unmailed.items() if name not in through],
        "lists_mailed_through_others": [
            {"list": name, "active": unmailed[name]["active"], **through[name]}
            for name in sorted(through)
        ],
        "through": through,
    }


# Complaint rates past these put a sender's mail in the spam folder (Gmail's
# sender guidelines: keep it under 0.1%, never reach 0.3%).
COMPLAINT_LIMITS = (0.003, 0.001)


def complaint_warning_text(warning: dict) -> str:
    """One complaint warning of a report, in words (the text and HTML reports say the same)."""
    advice = (
        "above 0.3% (Gmail's limit): stop sending to this audience until it falls"
        if warning["limit"] >= 0.003
        else "above 0.1%: mailbox providers start filtering at this level"
    )
    return (
        f"campaign {warning['campaign']} has a complaint rate of {warning['rate']:.2%} "
        f"({warning['complaints']} of {warning['sent']} sent), {advice}"
    )


def lift_text(name: str, h: dict) -> str:
    """A holdout's lift in words (a campaign's, a sequence's): the purchase rates of the
    mailed and the held out, their difference and its 95% interval."""
    ci = h["ci95"]
    interval = f" (95% interval {ci[0]:+.2%} to {ci[1]:+.2%})" if ci else ""
    return (
        f"Lift of {name}: mailed {h['mailed_rate']:.2%} bought, held out "
        f"{h['held_out_rate']:.2%}: {h['difference']:+.2%}{interval}"
    )


MAILED_THROUGH_NOTE = "a reader on several lists of a campaign gets one message"


def mailed_through_text(entry: dict) -> str:
    """One list of ``lists_mailed_through_others`` in words (text and HTML reports alike):
    ``fans (3 active: 2 mailed through blog, 1 through shop)``."""
    through = ", ".join(
        f"{n:,} {'mailed ' if i == 0 else ''}through {other}"
        for i, (other, n) in enumerate(entry["through"].items())
    )
    return f"{entry['list']} ({entry['active']:,} active: {through})"


def skipped_for_reader_text(entries: list[dict]) -> str:
    """``skipped_for_reader`` in words, per campaign (text and HTML reports alike):
    ``launch 4 (quiet after purchase 3, frequency cap 1)``."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in entries:
        per[e["campaign"]][e["reason"]] += e["messages"]
    return ", ".join(
        f"{slug} {sum(reasons.values()):,} ("
        + ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items()))
        + ")"
        for slug, reasons in sorted(per.items())
    )


def _complaint_warnings(db: Database, period: Period) -> list[dict]:
    """The period's campaigns whose complaint rate passed one of COMPLAINT_LIMITS."""
    out = []
    figures = period.once("campaign_id", lambda: _delivery_figures(db, period, "campaign_id"))
    for cid, counts in sorted(figures.items()):
        sent, complaints = counts["sent"], counts["complaints"]
        if not sent or not complaints:
            continue
        rate = complaints / sent
        limit = next((x for x in COMPLAINT_LIMITS if rate > x), None)
        if limit is not None:
            slug = period.campaigns.get(cid, {"slug": f"#{cid}"})["slug"]
            out.append(
                {
                    "campaign": slug,
                    "sent": sent,
                    "complaints": complaints,
                    "rate": rate,
                    "limit": limit,
                }
            )
    return out


def _group(by: str, key, campaigns: dict, lists: dict | None = None) -> tuple[str, str]:
    if by == "list":
        return ("list", (lists or {}).get(key, f"#{key}"))
    campaign = campaigns.get(key, {"slug": f"#{key}", "offer": "?"})
    return (by, campaign["slug"] if by == "campaign" else campaign["offer"])


def _mailed_through(db: Database, slugs: list[str], cparams: list) -> dict[str, dict]:
    """For the lists named (none of the period's messages went through them): those
    whose active readers received a message of the period through another list, as
    {slug: {"mailed": readers, "through": {other list: readers}}}. A reader on several
    lists of a campaign gets one message, targeted through one of them."""
    if not slugs:
        return {}
    in_period = "AND d.campaign_id IN (SELECT value FROM json_each(?))" if cparams else ""
    sql = f"""FROM lists l JOIN memberships m ON m.list_id = l.id AND {MAILABLE_MEMBER}
              JOIN deliveries d ON d.subscriber_id = m.subscriber_id AND d.state = 'sent'
                   AND d.list_id != l.id {in_period}
              JOIN lists o ON o.id = d.list_id
              WHERE l.slug IN (SELECT value FROM json_each(?))"""
    params = [*cparams, json.dumps(slugs)]
    out: dict[str, dict] = {}
    for slug, n in db.execute(
        f"SELECT l.slug, COUNT(DISTINCT m.subscriber_id) {sql} GROUP BY l.slug", params
    ):
        out[slug] = {"mailed": n, "through": {}}
    for slug, other, n in db.execute(
        f"""SELECT l.slug, o.slug, COUNT(DISTINCT m.subscriber_id) {sql}
            GROUP BY l.slug, o.slug ORDER BY l.slug, COUNT(DISTINCT m.subscriber_id) DESC,
            o.slug""",
        params,
    ):
        out[slug]["through"][other] = n
    return out


def _lists_without_revenue(db: Database, period: Period) -> list[tuple[bool, dict]]:
    """(mailed in the period, {list, active}) for each list with members and no orders."""
    sale_where, sparams = period.sale_filter()
    earned = {
        lid
        for (lid,) in db.execute(
            f"""SELECT DISTINCT list_id FROM sales {sale_where}
                {"AND" if sale_where else "WHERE"} list_id IS NOT NULL
                AND status IN {ORDER_SQL}""",
            sparams,
        )
    }
    # Mailed: the period's pass over the deliveries counted a message sent through it.
    sent = period.once("list_id", lambda: _delivery_figures(db, period, "list_id"))
    members = period.once("members", lambda: member_counts(db))
    return [
        (sent.get(lid, {}).get("sent", 0) > 0, {"list": slug, "active": members[lid]["active"]})
        for lid, slug in sorted(period.list_names.items(), key=lambda item: item[1])
        if members.get(lid, {}).get("active") and lid not in earned
    ]


def _holdouts(db: Database, period: Period) -> list[dict]:
    """The period's campaigns with a holdout: the lift of their mail, in their window.
    The mailed and held-out groups are counted in the period's pass over the
    deliveries; their buyers are found from the window's orders (far fewer than a
    campaign's deliveries): each buyer's one delivery of the campaign, if any."""
    out = []
    figures = period.once("campaign_id", lambda: _delivery_figures(db, period, "campaign_id"))
    for cid, c in sorted(period.campaigns.items()):
        if not c["holdout"] or not c["started"] or (period.limited and cid not in period.in_period):
            continue
        window_end = datetime.fromisoformat(c["started"]) + timedelta(days=c["days"])
        buyers = dict(
            db.execute(
                f"""SELECT d.state, COUNT(*) FROM subscribers s
                    CROSS JOIN deliveries d ON d.campaign_id = ? AND d.subscriber_id = s.id
                    WHERE s.key IN (SELECT email_key FROM sales WHERE at >= ? AND at <= ?
                                    AND status IN {ORDER_SQL})
                    AND d.state IN ('sent', 'held_out')
                    GROUP BY d.state""",
                [cid, c["started"], window_end.isoformat()],
            ).fetchall()
        )
        counts = figures.get(cid, {})
        groups = [(counts.get(state, 0), buyers.get(state, 0)) for state in ("sent", "held_out")]
        out.append(
            {
                "campaign": c["slug"],
                "holdout": c["holdout"],
                "window_days": c["days"],
                **lift(*groups[0], *groups[1]),
            }
        )
    return out


def credit_variants(db: Database, rows: dict, campaigns: dict, only: list[int] | None) -> None:
    """Report by offer: move an offer test's deliveries from the campaign's offer (its
    first variant) to the offer each delivery carried. ``rows`` is keyed ('offer', slug)."""
    ids = [cid for (cid,) in db.execute("SELECT id FROM campaigns WHERE variants IS NOT NULL")]
    ids = [cid for cid in ids if only is None or cid in only]
    if not ids:
        return
    for cid, variant, state, n in db.execute(
        """SELECT campaign_id, variant, state, COUNT(*) FROM deliveries
           WHERE campaign_id IN (SELECT value FROM json_each(?)) AND variant IS NOT NULL
           GROUP BY 1, 2, 3""",
        [json.dumps(ids)],
    ):
        home, there = rows[("offer", campaigns[cid]["offer"])], rows[("offer", variant)]
        for key in (
            ("audience", state) if state in ("sent", "failed", "held_out") else ("audience",)
        ):
            home[key] -= n
            there[key] += n


# --- by sequence ----------------------------------------------------------------------
# A sequence's step is a campaign row (slug ``<sequence>/<step>``), so its figures are
# the campaign grouping's row for it, arranged per step; only buyers and the lift
# against the held-out readers are the sequences' own.

STEP_SUMS = ("sent", "failed", "unsubscribed", "bounced", "complaints", "clicks", "orders")


def build_sequence_report(
    db: Database,
    since: str | None = None,
    until: str | None = None,
    *,
    by_campaign: dict | None = None,
) -> dict:
    """``listkit report --by sequence``: per step of each sequence its messages' figures
    (sent, unsubscribed, bounced, clicks, buyers, revenue per 1,000 sent), per sequence
    the same summed (buyers counted once) and its lift against its held-out readers.
    ``by_campaign``: the all-time report by campaign, when the caller has it already.

    All time only: a step sends every day, so a period would have to select its
    messages by their own dates, not by when the step first sent."""
    start, end = period_bounds(since, until)
    if start or end:
        raise InputError(
            "--by sequence reports all time (a sequence's steps send every day); "
            "leave out --since and --until"
        )
    campaigns = by_campaign or build_report(db, "campaign")
    rows = {r["campaign"]: r for r in campaigns["rows"]}
    buyers = _sequence_buyers(db)
    out = []
    for sid, slug, trigger, holdout, steps in db.execute(
        "SELECT id, slug, trigger, holdout, steps FROM sequences ORDER BY slug"
    ).fetchall():
        step_rows = []
        for step in json.loads(steps):
            name = f"{slug}/{step['name']}"
            row = rows.get(name) or _finish_row("campaign", name, _empty_row(), {})
            step_rows.append(
                {
                    "step": step["name"],
                    "offer": step["offer"],
                    "removed": step["removed"],
                    **{k: v for k, v in row.items() if k != "campaign"},
                    "buyers": len(buyers.get((sid, step["name"]), ())),
                }
            )
        out.append(
            {
                "sequence": slug,
                "trigger": trigger,
                "steps": step_rows,
                "totals": _sequence_totals(step_rows, buyers.get((sid, None), set())),
                "lift": _sequence_lift(db, sid, holdout, json.loads(steps)),
            }
        )
    return {"by": "sequence", "since": since, "until": until, "sequences": out}


def _sequence_buyers(db: Database) -> dict[tuple[int, str | None], set[str]]:
    """Who bought through each step, and through each sequence (step None): the buyers
    of the orders attributed to a step's campaign row, each once."""
    buyers: dict = defaultdict(set)
    for sid, step, who in db.execute(
        f"""SELECT DISTINCT c.sequence_id, c.step, coalesce(s.email_key, 'sale:' || s.id)
            FROM sales s JOIN campaigns c ON c.id = s.campaign_id
            WHERE c.sequence_id IS NOT NULL AND s.status IN {ORDER_SQL}"""
    ):
        buyers[(sid, step)].add(who)
        buyers[(sid, None)].add(who)
    return buyers


def _sequence_totals(steps: list[dict], buyers: set[str]) -> dict:
    """A sequence's steps summed: counts and revenue added, buyers counted once."""
    totals: dict = {name: sum(s[name] for s in steps) for name in STEP_SUMS}
    revenue: dict[str, int] = {}
    for s in steps:
        for cur, amount in s["revenue"].items():
            revenue[cur] = revenue.get(cur, 0) + amount
    return {
        **totals,
        "buyers": len(buyers),
        "revenue": revenue,
        "revenue_per_1000": per_thousand(revenue, totals["sent"]),
    }


def _sequence_lift(
    db: Database, sequence_id: int, holdout: float, steps: list[dict]
) -> dict | None:
    """The readers whose first step came due, mailed (a step's message was made for
    them) against held out: the share who bought, from their entry to the end of the
    sequence's last step plus its attribution window (a sale that enrolled a reader
    is not a purchase it caused). None for a sequence that holds nobody out."""
    held = db.execute(
        "SELECT EXISTS (SELECT 1 FROM enrollments WHERE sequence_id = ? AND state = ?)",
        [sequence_id, HELD_OUT],
    ).fetchone()[0]
    if not holdout and not held:
        return None
    days = db.execute(
        "SELECT coalesce(max(attribution_days), 0) FROM campaigns WHERE sequence_id = ?",
        [sequence_id],
    ).fetchone()[0]
    window = sum(s["after"] for s in steps if not s["removed"]) + days * 86400
    groups = {0: (0, 0), 1: (0, 0)}
    for is_held, n, bought in db.execute(
        f"""SELECT e.state = '{HELD_OUT}', COUNT(*), coalesce(SUM(EXISTS (
                SELECT 1 FROM sales x WHERE x.email_key = s.key AND x.status IN {ORDER_SQL}
                AND x.id IS NOT e.sale_id AND unixepoch(x.at) > e.trigger_at
                AND unixepoch(x.at) <= e.trigger_at + ?)), 0)
            FROM enrollments e JOIN subscribers s ON s.id = e.subscriber_id
            WHERE e.sequence_id = ? AND (e.state = '{HELD_OUT}' OR e.step IS NOT NULL)
            GROUP BY 1""",
        [window, sequence_id],
    ):
        groups[is_held] = (n, bought)
    return {
        "holdout": holdout,
        "window_days": round(window / 86400, 2),
        **lift(*groups[0], *groups[1]),
    }
