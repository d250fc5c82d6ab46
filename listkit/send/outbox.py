"""The outbox: one ``deliveries`` row per campaign x subscriber, and its state machine.

    pending -> sending(claimed) -> sending(data) -> sent
                                                 -> deferred  (4xx, 421, lost before DATA)
                                                 -> failed    (5xx for that recipient)
                                                 -> unknown   (lost after DATA began)
    pending -> skipped   (suppressed or unsubscribed by the time it was claimed, or
                          unsubscribed from a message of a campaign it follows; or a
                          selling message that cannot respect its reader in time)
    pending -> held_back -> (claimed again at next_unix)  (the reader's quiet period
                          after a purchase, or the frequency cap: see ``respect``)
               held_back -> skipped  (no run came between next_unix and the deadline)
    held_out             (kept back to measure lift; never mailed)
    reserved -> pending  (test-then-send: the rest, given the winning offer once chosen)

The rules: a claim is committed (``BEGIN IMMEDIATE``) before its SMTP
transaction begins, and suppression is checked at claim time and again
(``may_go``) just before the content goes. Before the message content (after
DATA's 354) can reach the server, the run durably marks it in the marks file
(``marks``: no write lock), which the next send folds into the row's phase
(``data``); a run that dies leaves ``sending`` rows that the next run resolves
by that phase: ``claimed`` goes back to pending (the server never got the
content and its final dot, so it has no message), ``data`` becomes unknown
(the server may have it). ``unknown`` is never retried by itself.

A campaign's audience is frozen when its outbox is built (in short
transactions; a build cut short is completed by the next one); ``top_up``
adds only subscribers who have no row in it yet, so nobody gets a second one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from sqlite_utils import Database

from listkit.audience.subscribers import SUBSCRIBER_COLUMNS
from listkit.audience.suppressions import BOUNCED_DELIVERIES, DECLINED, suppress
from listkit.db import clock, immediate, iso, now, seconds
from listkit.mail.message_ids import message_id
from listkit.mail.tracking import row_token
from listkit.send.campaigns import Campaign, held_out, snapshot_audience
from listkit.send.respect import Hold, Respect, sort_out
from listkit.send.variants import assign_variant, in_test_part
from listkit.vocab import BOUNCE_REASONS, DELIVERY_STATES

MAX_ATTEMPTS = 8
BACKOFF = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=6)


# How many deliveries one transaction of an outbox build inserts. Between two,
# the write lock is free: `listkit serve` answering unsubscribes and clicks,
# or another writer, waits milliseconds, not for the whole audience (20,000
# rows took 0.74 s in one transaction; a million would pass the busy timeout).
FILL_CHUNK = 250


def build_outbox(db: Database, campaign_id: int, campaign: Campaign) -> int:
    """Create the deliveries of a campaign once (its audience frozen); rows created.

    The rows go in in chunks, each committed. A build cut short (the process
    died) left some rows and a campaign never started: the next call adds the
    rest of the audience, as it is then, and whoever has a row keeps it.
    """
    if has_outbox(db, campaign_id):
        started = db.execute("SELECT started FROM campaigns WHERE id = ?", [campaign_id]).fetchone()
        if started is None or started[0] is not None:
            return 0
        return _fill(db, campaign_id, campaign, newcomers_only=True)[0]
    return _fill(db, campaign_id, campaign, newcomers_only=False)[0]


def has_outbox(db: Database, campaign_id: int) -> bool:
    return bool(
        db.execute(
            "SELECT 1 FROM deliveries WHERE campaign_id = ? LIMIT 1", [campaign_id]
        ).fetchone()
    )


def top_up(db: Database, campaign_id: int, campaign: Campaign) -> tuple[int, int]:
    """Add the campaign's current audience that has no row in its outbox yet.

    Whoever already has a row (sent, failed, held out, skipped...) never gets a
    second one; newcomers are held out by the same rule as the first audience.
    Returns (rows added, of which held out).
    """
    return _fill(db, campaign_id, campaign, newcomers_only=True)


def _fill(
    db: Database, campaign_id: int, campaign: Campaign, *, newcomers_only: bool
) -> tuple[int, int]:
    """Insert a delivery for each of the audience (only those without one, if
    ``newcomers_only``); (rows added, of which held out).

    The audience is read once, into a temporary table; the rows are made
    outside any transaction and inserted ``FILL_CHUNK`` at a time, each chunk
    in a short write transaction of its own (which checks, for
    ``newcomers_only``, who has a row by then).
    """
    created = held = 0
    # Test-then-send: once the rest has been given the chosen offer, a
    # newcomer of the rest gets it too, instead of waiting for a choice
    # already made.
    chosen = None
    if campaign.test_share and newcomers_only:
        row = db.execute(
            """SELECT variant FROM deliveries WHERE campaign_id = ? AND part = 'rest'
               AND variant IS NOT NULL LIMIT 1""",
            [campaign_id],
        ).fetchone()
        chosen = row[0] if row else None
    snapshot_audience(db, campaign, "lk_audience")
    try:
        last = 0
        while True:
            chunk = db.execute(
                """SELECT rowid, id, key, list_id FROM temp.lk_audience
                   WHERE rowid > ? ORDER BY rowid LIMIT ?""",
                [last, FILL_CHUNK],
            ).fetchall()
            if not chunk:
                break
            last = chunk[-1][0]
            rows = []
            for _rowid, subscriber_id, key, list_id in chunk:
                state = "held_out" if held_out(campaign.slug, key, campaign.holdout) else "pending"
                variant = part = None
                if campaign.variants and state == "pending":
                    variant = assign_variant(campaign.slug, key, campaign.variants, campaign.split)
                    if campaign.test_share:
                        part = "test"
                        if not in_test_part(campaign.slug, key, campaign.test_share):
                            state, variant, part = "reserved", None, "rest"
                            if chosen is not None:
                                state, variant = "pending", chosen
                rows.append((campaign_id, subscriber_id, list_id, state, variant, part))
            with immediate(db):
                if newcomers_only:
                    # One probe of the (campaign_id, subscriber_id) unique index per chunk.
                    known = {
                        r[0]
                        for r in db.execute(
                            """SELECT subscriber_id FROM deliveries WHERE campaign_id = ?
                               AND subscriber_id IN (SELECT value FROM json_each(?))""",
                            [campaign_id, json.dumps([r[1] for r in rows])],
                        )
                    }
                    rows = [r for r in rows if r[1] not in known]
                _insert(db, rows)
            created += len(rows)
            held += sum(r[3] == "held_out" for r in rows)
    finally:
        db.execute("DROP TABLE IF EXISTS temp.lk_audience")
    return created, held


def _insert(db: Database, rows: list[tuple]) -> None:
    """The one statement that puts deliveries in the outbox: rows of (campaign id,
    subscriber id, list id, state, variant, part)."""
    db.conn.executemany(
        """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state, variant, part)
           VALUES (?, ?, ?, ?, ?, ?)""",
        rows,
    )


def add_deliveries(
    db: Database, campaign_id: int, recipients: Iterable[tuple[int, int]]
) -> list[int]:
    """One pending delivery per (subscriber id, list id) that has none in the
    campaign yet (a step of a sequence); inside the caller's transaction. The ids
    of the rows added."""
    recipients = list(recipients)
    known = {
        r[0]
        for r in db.execute(
            """SELECT subscriber_id FROM deliveries WHERE campaign_id = ?
               AND subscriber_id IN (SELECT value FROM json_each(?))""",
            [campaign_id, json.dumps([r[0] for r in recipients])],
        )
    }
    rows = [
        (campaign_id, sid, list_id, "pending", None, None)
        for sid, list_id in recipients
        if sid not in known
    ]
    _insert(db, rows)
    return [
        r[0]
        for r in db.execute(
            """SELECT id FROM deliveries WHERE campaign_id = ?
               AND subscriber_id IN (SELECT value FROM json_each(?))""",
            [campaign_id, json.dumps([r[1] for r in rows])],
        )
    ]


def recover(db: Database, campaign_id: int) -> dict[str, int]:
    """Resolve rows a dead run left in ``sending``; call only while holding the send lock."""
    with immediate(db):
        back = db.execute(
            """UPDATE deliveries SET state = 'pending', phase = NULL, claimed_by = NULL,
               attempts = max(attempts - 1, 0)
               WHERE campaign_id = ? AND state = 'sending' AND phase = 'claimed'""",
            [campaign_id],
        ).rowcount
        unknown = db.execute(
            """UPDATE deliveries SET state = 'unknown',
               last_reply = coalesce(last_reply, 'the sending run stopped after DATA began')
               WHERE campaign_id = ? AND state = 'sending'""",
            [campaign_id],
        ).rowcount
    return {"pending": back, "unknown": unknown}


@dataclass(frozen=True)
class Claimed:
    """A claimed row: what its message is made from (``render``) and sent with."""

    id: int
    subscriber_id: int
    email: str
    key: str
    name: str | None
    first_name: str | None
    last_name: str | None
    fields: str
    list_slug: str
    list_title: str | None
    legacy_token: bytes | None
    attempts: int
    secret: bytes = field(repr=False, compare=False)

    @cached_property
    def token(self) -> str:
        """The token its message carries (``tracking.row_token``), derived when first
        read: in the render process, which reads it for the links; in the sending
        process only for a VERP envelope. Five HMACs a message that the sending
        process, the busy one, no longer spends."""
        return row_token(self.secret, self.id, self.legacy_token)


def claim(
    db: Database,
    campaign_id: int,
    run_id: str,
    limit: int,
    variant: str | None = None,
    declined: Iterable[int] = (),
    respect: Respect | None = None,
    *,
    secret: bytes,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (of one ``variant``, if given), committed before any is sent.

    Rows whose address is suppressed, whose membership is no longer active,
    or whose reader unsubscribed from a message of a campaign in ``declined``
    (the campaign and those it follows: ``declined_campaigns``) are marked
    ``skipped`` instead: an unsubscribe during a campaign is honoured. With
    ``respect`` (a selling message), rows whose reader it would not respect now
    are held back until it would, or skipped with the reason when that is past
    the deadline (``respect.sort_out``). Each claimed row's token is derived
    with ``secret`` when it is first read (``Claimed.token``). Returns nothing
    only when no row is due.
    """
    declined_json = json.dumps(list(declined))
    claimed: list[Claimed] = []
    # One transaction per batch of rows looked at: rows held back or skipped do not
    # make a claim's transaction (and the write lock) last longer than one batch.
    while len(claimed) < limit:
        with immediate(db):
            at = clock()
            stamp = seconds(at)
            if respect is not None and respect.deadline is not None and at > respect.deadline:
                # Held back until a time before the deadline, but no run came by
                # then: skipped, with the reason it was held (kept in last_reply).
                db.execute(
                    """UPDATE deliveries SET state = 'skipped', phase = NULL
                       WHERE campaign_id = ? AND state = 'held_back'""",
                    [campaign_id],
                )
            # A whole batch looked at each time (rows beyond those wanted that
            # may go stay pending, for the next claim): not ever smaller ones.
            rows = _due_rows(db, campaign_id, stamp, limit, variant, declined_json)
            batch, skipped, held = _sort_claims(db, rows, respect, at, secret)
            batch = batch[: limit - len(claimed)]
            db.conn.executemany(
                """UPDATE deliveries SET state = 'skipped', phase = NULL, last_reply = ?
                   WHERE id = ?""",
                [(reason, i) for i, reason in skipped],
            )
            db.conn.executemany(
                """UPDATE deliveries SET state = 'held_back', phase = NULL, next_unix = ?,
                   last_code = NULL, last_reply = ? WHERE id = ?""",
                [(seconds(h.until, round_up=True), h.reason, i) for i, h in held],
            )
            db.conn.executemany(
                """UPDATE deliveries SET state = 'sending', phase = 'claimed', claimed_by = ?,
                   attempts = attempts + 1 WHERE id = ?""",
                [(run_id, c.id) for c in batch],
            )
        claimed += batch
        if len(rows) < limit:  # no more are due
            break
    return claimed


def _sort_claims(
    db: Database, rows: list[tuple], respect: Respect | None, at: datetime, secret: bytes
) -> tuple[list[Claimed], list[tuple[int, str]], list[tuple[int, Hold]]]:
    """Due rows (``_due_rows``) sorted into those claimed, those skipped (id, why) and
    those held back for their reader (id, until when and why)."""
    skipped = [(row[0], SKIPPED_UNSUBSCRIBED) for row in rows if row[-1]]
    batch = []
    for row in rows:
        if not row[-1]:
            batch.append(Claimed(*row[:-1], secret))
    if respect is None or not batch:
        return batch, skipped, []
    wait, skip = sort_out(db, respect, [c.subscriber_id for c in batch], at)
    held = [(c.id, wait[c.subscriber_id]) for c in batch if c.subscriber_id in wait]
    skipped += [(c.id, skip[c.subscriber_id]) for c in batch if c.subscriber_id in skip]
    batch = [c for c in batch if c.subscriber_id not in wait and c.subscriber_id not in skip]
    return batch, skipped, held


SKIPPED_UNSUBSCRIBED = "suppressed or unsubscribed before sending"


def _due_rows(
    db: Database, campaign_id: int, stamp: int, limit: int, variant: str | None, declined: str
) -> list[tuple]:
    """Up to ``limit`` rows due at ``stamp``: a ``Claimed``'s fields, then whether the
    reader has gone (suppressed, left the list, or declined)."""
    # Three index walks (deferred rows now due, pending ones, then held-back ones
    # now due): one query with OR would scan and sort the whole campaign on every
    # claim. Each walk takes the rows in the state index's order (deliveries_report:
    # a list's rows, then a variant's, in id order), so it stops after the rows it
    # takes; in plain id order it would read and sort every row of the state
    # (20,000 pending rows: 5 ms a claim instead of 0.4). Held-back rows come last:
    # the index does not hold their due time, so their walk reads all of them,
    # which a campaign holding many back can afford at the end of a run, not on
    # every batch.
    rows: list[tuple] = []
    for where, params in (
        ("d.state = 'deferred' AND d.next_unix <= ?", [stamp]),
        ("d.state = 'pending'", []),
        ("d.state = 'held_back' AND d.next_unix <= ?", [stamp]),
    ):
        if len(rows) >= limit:
            break
        if variant is not None:
            where, params = f"{where} AND d.variant = ?", [*params, variant]
        rows += db.execute(
            f"""SELECT d.id, {SUBSCRIBER_COLUMNS}, l.slug,
                      l.title, d.legacy_token, d.attempts,
                      EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key)
                        OR NOT EXISTS (SELECT 1 FROM memberships m
                                       WHERE m.list_id = d.list_id
                                       AND m.subscriber_id = d.subscriber_id
                                       AND m.status = 'active')
                        OR d.subscriber_id IN ({DECLINED})
               FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
               JOIN lists l ON l.id = d.list_id
               WHERE d.campaign_id = ? AND {where}
               ORDER BY d.list_id, d.variant, d.id LIMIT ?""",
            [declined, campaign_id, *params, limit - len(rows)],
        ).fetchall()
    return rows


@dataclass(frozen=True)
class Result:
    id: int
    state: str  # sent | deferred | failed | unknown | pending (released unsent)
    code: int | None = None
    reply: str | None = None
    attempts: int = 0
    hard_bounce: bool = False
    email: str = ""


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def may_go(db: Database, delivery_ids: Iterable[int], declined: Iterable[int] = ()) -> set[int]:
    """Which of these claimed rows may still be mailed: the address is not
    suppressed, its membership is still active and its reader has not
    unsubscribed from a message of a campaign in ``declined`` (a read: no
    write lock)."""
    return {
        row[0]
        for row in db.execute(
            f"""SELECT d.id FROM deliveries d
               WHERE d.id IN (SELECT value FROM json_each(?)) AND d.state = 'sending'
                 AND NOT EXISTS (SELECT 1 FROM suppressions x JOIN subscribers s
                                 ON s.key = x.key WHERE s.id = d.subscriber_id)
                 AND EXISTS (SELECT 1 FROM memberships m
                             WHERE m.list_id = d.list_id AND m.subscriber_id = d.subscriber_id
                             AND m.status = 'active')
                 AND d.subscriber_id NOT IN ({DECLINED})""",
            [json.dumps(list(delivery_ids)), json.dumps(list(declined))],
        ).fetchall()
    }


def record(db: Database, campaign_id: int, results: Iterable[Result]) -> None:
    """One transaction: the results of a group of messages. A sent row keeps its
    code, not the server's text (a 250 says it all); the others keep both."""
    stamp = now()
    at = seconds()
    results = list(results)
    conn = db.conn
    with immediate(db):
        updates = []
        for r in results:
            state, next_attempt = r.state, None
            if state == "deferred":
                if r.attempts >= MAX_ATTEMPTS:
                    state = "failed"
                else:
                    next_attempt = at + int(backoff(r.attempts).total_seconds())
            reply = None if state == "sent" else r.reply
            updates.append((state, r.code, reply, next_attempt, at, r.id))
        conn.executemany(
            """UPDATE deliveries SET state = ?1, phase = NULL, claimed_by = NULL, last_code = ?2,
               last_reply = ?3, next_unix = ?4, sent_unix = CASE WHEN ?1 = 'sent' THEN ?5 END,
               attempts = CASE WHEN ?1 = 'pending' THEN max(attempts - 1, 0) ELSE attempts END
               WHERE id = ?6""",
            updates,
        )
        for r in results:
            if r.hard_bounce:
                suppress(db, r.email, "hard_bounce", campaign_id=campaign_id, source="smtp")
                conn.execute(
                    """UPDATE memberships SET status = 'bounced', status_at = ?,
                       status_reason = ? WHERE subscriber_id =
                       (SELECT subscriber_id FROM deliveries WHERE id = ?)""",
                    [stamp, f"{r.code} {r.reply}"[:200], r.id],
                )


def counts(db: Database, campaign_id: int) -> dict[str, int]:
    found = dict(
        db.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
            [campaign_id],
        ).fetchall()
    )
    return {s: found.get(s, 0) for s in DELIVERY_STATES}


def due_rows(db: Database, campaign_id: int, at: datetime) -> tuple[int, int]:
    """(rows a send would claim or resume at ``at``, rows that wait for a later time:
    deferred, or held back for their reader), read by the state index."""
    stamp = seconds(at)
    return db.execute(
        """SELECT COUNT(*) FILTER (WHERE state IN ('pending', 'sending') OR next_unix <= ?),
                  COUNT(*) FILTER (WHERE state IN ('deferred', 'held_back') AND next_unix > ?)
           FROM deliveries WHERE campaign_id = ?
           AND state IN ('pending', 'sending', 'deferred', 'held_back')""",
        [stamp, stamp, campaign_id],
    ).fetchone()


def held_and_skipped(db: Database, campaign_id: int) -> dict:
    """Why the campaign's messages wait or were skipped: ``held_back``, per reason,
    how many and until when the last waits; ``skipped``, how many per reason."""
    held, skipped = [], {}
    for state, reason, n, until in db.execute(
        """SELECT state, coalesce(last_reply, ''), COUNT(*), max(next_unix) FROM deliveries
           WHERE campaign_id = ? AND state IN ('held_back', 'skipped')
           GROUP BY state, last_reply ORDER BY state, last_reply""",
        [campaign_id],
    ):
        if state == "held_back":
            held.append({"reason": reason, "messages": n, "until": iso(until)})
        else:
            skipped[reason] = n
    return {"held_back": held, "skipped": skipped}


def problems(
    db: Database, campaign_id: int, *, secret: bytes, domain: str, limit: int = 100
) -> list[dict]:
    """Failed, unknown and deferred rows with their last SMTP reply (and the
    Message-ID they carried, on the sender's ``domain``)."""
    cursor = db.execute(
        """SELECT d.id, coalesce(d.sent_to, s.email), d.state, d.attempts, d.last_code,
                  d.last_reply, d.legacy_token, d.next_unix
           FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
           WHERE d.campaign_id = ? AND d.state IN ('failed', 'unknown', 'deferred')
           ORDER BY d.state, d.id LIMIT ?""",
        [campaign_id, limit],
    )
    return [
        {
            "email": email,
            "state": state,
            "attempts": attempts,
            "code": code,
            "reply": reply,
            "message_id": message_id(row_token(secret, did, legacy), domain),
            "next_attempt": iso(next_unix),
        }
        for did, email, state, attempts, code, reply, legacy, next_unix in cursor
    ]


def bounced_after_sent(db: Database, campaign_id: int, *, secret: bytes, domain: str) -> list[dict]:
    """The campaign's deliveries the server accepted (state ``sent``) that a later bounce
    report says bounced: hard, or the soft bounce that suppressed the address. They stay
    ``sent`` (the message did go out, and nothing ever sends a ``sent`` row again); this
    is how `listkit status` and the report tell them apart. Rows shaped as
    ``outbox.problems``, with state ``bounced`` and the report's status and diagnostic."""
    cursor = db.execute(
        f"""SELECT d.id, coalesce(d.sent_to, s.email), d.attempts, d.legacy_token,
                   json_extract(b.detail, '$.status'), json_extract(b.detail, '$.diagnostic')
            FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
            -- the latest bounce report of the delivery, if one named it (a suppression
            -- alone can mark it bounced)
            LEFT JOIN events b ON b.id = (SELECT max(e.id) FROM events e
                                          WHERE e.delivery_id = d.id AND e.kind = 'bounce')
            WHERE d.campaign_id = ? AND d.state = 'sent' AND d.id IN ({BOUNCED_DELIVERIES})
            ORDER BY d.id""",
        [campaign_id, json.dumps(BOUNCE_REASONS)],
    )
    return [
        {
            "email": email,
            "state": "bounced",
            "attempts": attempts,
            "code": status,
            "reply": diagnostic,
            "message_id": message_id(row_token(secret, did, legacy), domain),
            "next_attempt": None,
        }
        for did, email, attempts, legacy, status, diagnostic in cursor
    ]


def retry(db: Database, campaign_id: int, state: str) -> int:
    """Put unknown, failed or deferred rows back to be sent on the next run.

    Failed rows of suppressed addresses stay failed. A finished campaign is
    reopened (state 'sending'), so that `send --due` picks it up again too.
    """
    with immediate(db):
        if state == "deferred":
            n = db.execute(
                """UPDATE deliveries SET next_unix = ?
                   WHERE campaign_id = ? AND state = 'deferred'""",
                [seconds(), campaign_id],
            ).rowcount
        else:
            n = db.execute(
                """UPDATE deliveries SET state = 'pending', phase = NULL, next_unix = NULL
                   WHERE campaign_id = ? AND state = ?
                     AND NOT EXISTS (SELECT 1 FROM suppressions x JOIN subscribers s
                                     ON s.key = x.key WHERE s.id = deliveries.subscriber_id)""",
                [campaign_id, state],
            ).rowcount
        if n:
            db.execute(
                "UPDATE campaigns SET state = 'sending', finished = NULL WHERE id = ?",
                [campaign_id],
            )
    return n
