"""Respect for the reader: the quiet period after a purchase and the frequency cap.

The rule: a selling message (``campaigns.sells``: a campaign's or a sequence
step's, unless its file says ``sells = false``) goes to a reader only when it
fits: not within ``LISTKIT_QUIET_AFTER_PURCHASE`` of their last purchase, and
not past ``LISTKIT_FREQUENCY``'s N selling messages in any window (campaigns'
and steps' alike; sent, being sent, or unknown: the server may have it). One
that does not fit waits, held back until it does; one that cannot fit before
its deadline (a campaign's ``max_late`` after it was due; a campaign's or a
step's offer's ``expires``) is skipped with its reason. A selling step is
also skipped for a reader who bought what its sequence sells since entering
it (``Sold``). Nothing is sent in a quiet period, and nothing is dropped
without its reason on the row. It is decided when rows are claimed
(``outbox.claim``, in the claim's transaction), for a whole batch with one
query per rule: ``sort_out`` is the one check, for campaigns and sequence
steps alike.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from listkit.audience.audiences import PURCHASES
from listkit.config import Frequency, Settings
from listkit.db import seconds
from listkit.send.campaigns import Campaign, followed_campaign, selling_campaigns
from listkit.send.sequences import expiry
from listkit.vocab import FREQUENCY_CAP, ORDER_SQL, QUIET_AFTER_PURCHASE

# A delivery's times are Unix seconds (``*_unix`` columns); sales and campaigns
# keep ISO text (``db.seconds`` and ``stored_time``: the only places this module
# turns a time into either).
SENT_TIME = "d.sent_unix"  # unknown rows have none: they count as being sent now


def stored_time(at: datetime) -> str:
    """``at`` as the database stores an ISO time (``db.now``'s form: sales, campaigns)."""
    return at.astimezone(UTC).isoformat()


def read_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Hold:
    """A reader who may not get a selling message yet: until when, and why."""

    until: datetime
    reason: str  # vocab.QUIET_AFTER_PURCHASE or vocab.FREQUENCY_CAP


# The reason on a selling step's message skipped by ``Sold``.
BOUGHT_WHAT_IT_SELLS = "bought what the sequence sells"


@dataclass(frozen=True)
class Sold:
    """What a sequence sells (its selling steps' products and offers): a reader who
    bought one of them since entering it gets none of its selling steps."""

    sequence_id: int
    products: tuple[str, ...]
    offers: tuple[str, ...]


@dataclass(frozen=True)
class Respect:
    """The rules one selling message meets: the settings, the campaigns whose
    messages count against the cap, the time it must go by (None: no limit),
    and for a sequence's step what the sequence sells."""

    quiet: timedelta | None
    frequency: Frequency | None
    selling: tuple[int, ...] = ()
    deadline: datetime | None = None
    sold: Sold | None = None


def respect_for(
    db: Database,
    settings: Settings,
    campaign: Campaign,
    expires: str | None,
    sold: Sold | None = None,
) -> Respect | None:
    """The rules for the messages of ``campaign`` (a campaign, or a sequence's step
    with what its sequence sells, ``sold``; ``expires``: its offers' earliest), or
    None when it does not sell or no rule is on."""
    quiet, frequency = settings.quiet_after_purchase, settings.frequency
    if not campaign.sells or (quiet is None and frequency is None and sold is None):
        return None
    selling = tuple(selling_campaigns(db, campaign.path.parent)) if frequency else ()
    return Respect(quiet, frequency, selling, deadline(db, campaign, expires), sold)


def deadline(db: Database, campaign: Campaign, expires: str | None) -> datetime | None:
    """The last moment a campaign's message may go: ``max_late`` after it was due (its
    send_at, or for a follow-up the first's end plus ``after``), and its offer's expiry."""
    ends = [expiry(expires)]
    due = campaign.send_at
    if campaign.follows:
        row = followed_campaign(db, campaign.follows)
        due = None
        if row is not None and row[3]:
            due = datetime.fromisoformat(row[3]) + (campaign.after or timedelta())
    if due is not None and campaign.max_late is not None:
        ends.append(due + campaign.max_late)
    found = [e for e in ends if e is not None]
    return min(found) if found else None


def sort_out(
    db: Database, respect: Respect, subscriber_ids: Iterable[int], at: datetime
) -> tuple[dict[int, Hold], dict[int, str]]:
    """Of the readers about to be sent a selling message at ``at``: those held back
    (until when, and why), and those skipped because the message cannot reach them
    before its deadline, or (a step) because they bought what its sequence sells
    (why). Everyone else may have it now.

    A few queries for the whole batch, by indexes (``sales_email``, ``sales_at``;
    the deliveries of the campaigns that can have sent in the window, by
    campaign and subscriber): never one per reader."""
    ids = json.dumps(list(subscriber_ids))
    gone: dict[int, str] = {}
    if respect.sold is not None:
        gone = {sid: BOUGHT_WHAT_IT_SELLS for sid in _bought_what_it_sells(db, ids, respect.sold)}
    held: dict[int, Hold] = {}
    if respect.quiet is not None:
        for sid, last in _last_purchases(db, ids, at - respect.quiet):
            held[sid] = Hold(read_time(last) + respect.quiet, QUIET_AFTER_PURCHASE)
    if respect.frequency is not None:
        for sid, until in _capped(db, ids, respect.selling, respect.frequency, at):
            if sid not in held or held[sid].until < until:
                held[sid] = Hold(until, FREQUENCY_CAP)
    wait, skip = {}, gone
    for sid, hold in held.items():
        if hold.until <= at:  # fits now (a hold always ends after ``at``; a claim relies on it)
            continue
        if sid in skip:  # skipped already: a step whose sequence's product they bought
            continue
        if respect.deadline is not None and hold.until > respect.deadline:
            skip[sid] = hold.reason
        else:
            wait[sid] = hold
    return wait, skip


def _bought_what_it_sells(db: Database, ids: str, sold: Sold) -> list[int]:
    """Of the readers ``ids``, those who bought what the sequence sells since they
    entered it (its ``trigger_at``)."""
    return [
        sid
        for (sid,) in db.execute(
            f"""SELECT DISTINCT e.subscriber_id FROM enrollments e, ({PURCHASES}) b
                WHERE e.sequence_id = ? AND e.subscriber_id IN (SELECT value FROM json_each(?))
                  AND b.sid = e.subscriber_id AND unixepoch(b.at) > e.trigger_at
                  AND (b.product IN (SELECT value FROM json_each(?))
                       OR b.offer IN (SELECT value FROM json_each(?)))""",
            [sold.sequence_id, ids, json.dumps(sold.products), json.dumps(sold.offers)],
        )
    ]


def _last_purchases(db: Database, ids: str, since: datetime) -> list[tuple[int, str]]:
    """(subscriber id, time of their last purchase) for those who bought after ``since``.

    A purchase is an order (paid or partly refunded; a full refund is none) from
    the reader's address, or attributed to a message sent to them; both are read
    from the sales of the period alone (``sales_at``)."""
    return db.execute(
        f"""SELECT sid, max(at) FROM (
                SELECT s.id AS sid, x.at AS at FROM sales x
                JOIN subscribers s ON s.key = x.email_key
                WHERE x.at > :since AND x.status IN {ORDER_SQL}
                  AND s.id IN (SELECT value FROM json_each(:ids))
                UNION ALL
                SELECT d.subscriber_id, x.at FROM sales x
                JOIN deliveries d ON d.id = x.delivery_id
                WHERE x.at > :since AND x.status IN {ORDER_SQL}
                  AND d.subscriber_id IN (SELECT value FROM json_each(:ids)))
            GROUP BY sid""",
        {"since": stored_time(since), "ids": ids},
    ).fetchall()


def _capped(
    db: Database, ids: str, selling: tuple[int, ...], frequency: Frequency, at: datetime
) -> list[tuple[int, datetime]]:
    """(subscriber id, when they may have another) for the readers who have had
    ``frequency.count`` selling messages in the window before ``at``.

    A message counts from when it was sent; one being sent (or whose fate is
    unknown since the run died) counts too, being sent now."""
    since = stored_time(at - frequency.window)
    since_unix = seconds(at - frequency.window)
    # Only campaigns that can have sent in the window: still sending (or testing,
    # whose rest goes later), or finished within it. Most are long done.
    recent = [
        cid
        for (cid,) in db.execute(
            """SELECT id FROM campaigns WHERE id IN (SELECT value FROM json_each(?))
               AND (state IN ('sending', 'testing') OR finished > ?)""",
            [json.dumps(selling), since],
        )
    ]
    times: dict[int, list[datetime]] = defaultdict(list)
    for sid, state, when in db.execute(
        f"""SELECT d.subscriber_id, d.state, {SENT_TIME} FROM deliveries d
            WHERE d.subscriber_id IN (SELECT value FROM json_each(:ids))
              AND d.state IN ('sent', 'sending', 'unknown')
              AND d.campaign_id IN (SELECT value FROM json_each(:recent))
              AND (d.state IN ('sending', 'unknown') OR {SENT_TIME} > :since)""",
        {"ids": ids, "recent": json.dumps(recent), "since": since_unix},
    ):
        sent_at = datetime.fromtimestamp(when, UTC) if when is not None else at
        times[sid].append(at if state == "sending" else sent_at)
    capped = []
    for sid, sent in times.items():
        if len(sent) >= frequency.count:
            sent.sort()
            # The window must lose all but count - 1 of them.
            capped.append((sid, sent[len(sent) - frequency.count] + frequency.window))
    return capped
