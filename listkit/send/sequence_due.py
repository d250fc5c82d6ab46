"""Sending sequences: each reader's due step becomes a delivery, sent as a campaign's is.

``send_sequences`` is what `listkit send --due` does for sequences (and what
`listkit serve` does, ``first_only``, for a ``joined:`` sequence's first step
with ``after = "0m"``), under the send lock:

1. every sequence file is read and recorded (``sequence_files.sync_all``);
2. exits: a reader due for a step who is suppressed, is no longer an active
   member of the list the sequence mails them through, or unsubscribed from a
   message of any step of the sequence leaves it (``exited``, with the reason);
3. the held-out share is drawn when a reader's first step is due
   (``campaigns.held_out`` on the sequence's slug and the reader's address);
4. each due reader's step becomes a pending delivery of the step's campaign row
   (``outbox.add_deliveries``) and the reader passes it, in one transaction: a
   reader passes each step once, and the outbox's (campaign, subscriber) key
   says so again;
5. a step whose offer has expired (its ``expires``) is skipped, as a follow-up
   is never sent after its offer's expiry;
6. every step's outbox with messages due (new, deferred or held back for their
   reader, now due) is sent by ``sender.send_outbox``: the campaigns' claim,
   marks, recovery after SIGKILL, unknown state, and for a selling step (one
   whose file does not say ``sells = false``) the campaigns' respect check
   (``respect.respect_for``, ``respect.sort_out``, at claim time): skipped for a
   reader who bought what the sequence sells since entering it; held back by
   the quiet period after a purchase and the frequency cap, or skipped with the
   reason when that is past the step's deadline (its offer's ``expires``).

The rules: a tick reads only due readers (``enrollments_due``, a range on
``next_due`` over active rows), so a tick with nothing due costs one index
probe whatever the number of readers; a step is never mailed after the
reader's exit, since the claim checks suppression, membership and the
sequence's unsubscribes again, and an exit by purchase or refund skips the
reader's pending step messages in the sale's own transaction; a paused
sequence sends nothing and its readers wait (``next_due`` unchanged, so what
came due meanwhile goes at the first tick after ``resume``); a reader whose
step's message is held back passes no further step before it may go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import itemgetter

from sqlite_utils import Database

from listkit.audience.suppressions import DECLINED
from listkit.db import clock, immediate, seconds
from listkit.errors import ListkitError, SendError
from listkit.runlock import AlreadyRunning
from listkit.send.campaigns import Campaign, held_out
from listkit.send.outbox import add_deliveries
from listkit.send.prepare import Prepared, prepare_campaign
from listkit.send.respect import Sold, respect_for
from listkit.send.sender import RunSummary, send_lock, send_outbox
from listkit.send.sequence_files import Sequence, next_step, sync_all
from listkit.send.sequences import expiry
from listkit.vocab import ACTIVE, EXITED, FINISHED, HELD_OUT
from listkit.workspace import Workspace

CHUNK = 500  # due readers passed in one transaction


@dataclass
class StepOutcome:
    """What one tick did with one step (or one sequence's file)."""

    step: str  # <sequence>/<step>, or the sequence's slug for a file error
    action: str  # sent | error | locked
    summary: RunSummary | None = None
    message: str = ""


def send_sequences(
    ws: Workspace,
    *,
    at: datetime | None = None,
    limit: int | None = None,
    first_only: bool = False,
) -> list[StepOutcome]:
    """Pass every reader whose step is due at ``at`` and send the steps' messages.

    ``first_only``: only the first step of ``joined:`` sequences that go at
    once (``after = "0m"``), for readers who have passed nothing yet (the lead
    magnet `listkit serve` mails after a confirmation)."""
    at = at or clock()
    try:
        with send_lock(ws.settings.db_path.parent):
            return _tick(ws, at, limit, first_only)
    except AlreadyRunning as e:
        return [StepOutcome("sequences", "locked", message=str(e))]


def _tick(ws: Workspace, at: datetime, limit: int | None, first_only: bool) -> list[StepOutcome]:
    db = ws.db
    loaded = sync_all(db, ws.sequences_dir, ws.offers_dir, at=at)
    outcomes = [StepOutcome(slug, "error", message=m) for slug, m in loaded.errors.items()]
    paused = {r[0] for r in db.execute("SELECT id FROM sequences WHERE state = 'paused'")}
    anything_due = db.execute(
        f"""SELECT 1 FROM enrollments INDEXED BY enrollments_due
            WHERE state = '{ACTIVE}' AND next_due <= ? LIMIT 1""",
        [seconds(at)],
    ).fetchone()
    for _slug, (sid, seq) in loaded.sequences.items():
        if sid in paused:
            continue
        if first_only and (seq.kind != "joined" or seq.steps[0].after.total_seconds()):
            continue
        prepared: dict[str, Prepared] = {}
        try:
            _wait_for_held(db, sid)  # a run that died before it did so
            if anything_due:
                _exits(db, sid, at)
                _draw_holdout(db, sid, seq, at)
                _advance(ws, sid, seq, at, prepared, first_only)
            outcomes += _send_steps(ws, sid, seq, limit, prepared, first_only)
            _wait_for_held(db, sid)
        except SendError as e:
            # The server or the database refused us: the next step would meet it too.
            outcomes.append(StepOutcome(seq.slug, "error", message=f"{e}; later steps wait"))
            break
        except ListkitError as e:
            outcomes.append(StepOutcome(seq.slug, "error", message=str(e)))
    return outcomes


# Due active readers of one sequence (bound: the time, the sequence id), read
# through the index on (sequence, ``next_due``): only this sequence's due readers.
DUE = f"""enrollments e INDEXED BY enrollments_step_due
          JOIN subscribers s ON s.id = e.subscriber_id
          WHERE e.state = '{ACTIVE}' AND e.next_due <= ? AND e.sequence_id = ?"""


def _exits(db: Database, sequence_id: int, at: datetime) -> int:
    """Due readers who may no longer be mailed leave the sequence, with the reason."""
    stamp = seconds(at)
    steps = json.dumps(
        [r[0] for r in db.execute("SELECT id FROM campaigns WHERE sequence_id = ?", [sequence_id])]
    )
    reasons = (
        (
            """(SELECT 'suppressed: ' || x.reason FROM suppressions x JOIN subscribers s
                ON s.key = x.key WHERE s.id = e.subscriber_id)""",
            [],
        ),
        (
            """(SELECT CASE WHEN e.list_id IS NULL THEN 'left the list'
                  ELSE 'left the list: ' || coalesce((SELECT m.status FROM memberships m
                        WHERE m.list_id = e.list_id AND m.subscriber_id = e.subscriber_id),
                        'removed') END
                WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.list_id = e.list_id
                   AND m.subscriber_id = e.subscriber_id AND m.status = 'active'))""",
            [],
        ),
        (f"(SELECT 'unsubscribed' WHERE e.subscriber_id IN ({DECLINED}))", [steps]),
    )
    n = 0
    with immediate(db):
        for reason, params in reasons:
            rows = db.execute(
                f"SELECT e.id, {reason} FROM {DUE}", [*params, stamp, sequence_id]
            ).fetchall()
            gone = [(why, stamp, stamp, eid) for eid, why in rows if why is not None]
            db.conn.executemany(
                f"""UPDATE enrollments SET state = '{EXITED}', exit_reason = ?, exit_at = ?,
                    next_due = NULL, updated = ? WHERE id = ?""",
                gone,
            )
            n += len(gone)
    return n


def _draw_holdout(db: Database, sequence_id: int, seq: Sequence, at: datetime) -> None:
    """Readers due for their first step: the held-out share is kept back."""
    if not seq.holdout:
        return
    stamp = seconds(at)
    with immediate(db):
        rows = db.execute(
            f"SELECT e.id, s.key FROM {DUE} AND e.step IS NULL", [stamp, sequence_id]
        ).fetchall()
        held = [(stamp, eid) for eid, key in rows if held_out(seq.slug, key, seq.holdout)]
        db.conn.executemany(
            f"""UPDATE enrollments SET state = '{HELD_OUT}', next_step = NULL, next_due = NULL,
                updated = ? WHERE id = ?""",
            held,
        )


def _step_rows(db: Database, sequence_id: int) -> tuple[list[dict], dict[str, tuple[int, dict]]]:
    """The sequence's steps as recorded (every one it had), and each step's campaign
    id and recorded step (its offer, whether it sells...) by name."""
    steps = json.loads(
        db.execute("SELECT steps FROM sequences WHERE id = ?", [sequence_id]).fetchone()[0]
    )
    recorded = {s["name"]: s for s in steps}
    campaigns = {
        step: (cid, recorded.get(step, {"name": step, "offer": offer}))
        for cid, step, offer in db.execute(
            "SELECT id, step, offer FROM campaigns WHERE sequence_id = ?", [sequence_id]
        )
    }
    return steps, campaigns


def _prepared(ws: Workspace, seq: Sequence, step: dict, cache: dict) -> Prepared:
    """What sending a step (as recorded: ``_step_rows``) needs (its offer's composer,
    the SMTP settings, whether it sells), once a tick."""
    name = step["name"]
    if name not in cache:
        campaign = Campaign(
            slug=seq.step_slug(name),
            offer=step["offer"],
            lists=(),
            attribution_days=seq.attribution_days,
            # Only its folder is read: the campaigns', whose selling messages the cap counts.
            path=ws.campaigns_dir / f"{seq.slug}.toml",
            sells=step.get("sells", True),
        )
        cache[name] = prepare_campaign(ws, campaign)
    return cache[name]


def due_steps(
    db: Database,
    sequence_id: int,
    at: datetime,
    *,
    first_only: bool = False,
    limit: int | None = None,
) -> list[tuple[int, int, int, str]]:
    """The readers of a sequence whose next step is due at ``at`` (``first_only``:
    who have passed nothing yet), the earliest due first, grouped by step:
    (enrolment id, subscriber id, list id, step). Read from the index alone
    (``enrollments_step_due``): what a tick passes (``bench/sequences.py`` times it)."""
    only_first = " AND e.step IS NULL" if first_only else ""
    rows = db.execute(
        f"""SELECT e.id, e.subscriber_id, e.list_id, e.next_step
            FROM enrollments e INDEXED BY enrollments_step_due
            WHERE e.state = '{ACTIVE}' AND e.sequence_id = ? AND e.next_due <= ?{only_first}
            LIMIT ?""",
        [sequence_id, seconds(at), -1 if limit is None else limit],
    ).fetchall()
    # Sorted here, not in SQL: a sort there would read every due reader before the
    # first row (a LIMIT then saves nothing).
    return sorted(rows, key=itemgetter(3))


def _advance(
    ws: Workspace, sid: int, seq: Sequence, at: datetime, prepared: dict, first_only: bool
) -> None:
    """Due readers pass their step: its delivery made (skipped if its offer has
    expired), the next step set, in one transaction per chunk."""
    db = ws.db
    stamp = seconds(at)
    steps, campaigns = _step_rows(db, sid)
    while True:
        with immediate(db):
            # (enrolment id, subscriber id, list id, step), in step order
            rows = due_steps(db, sid, at, first_only=first_only, limit=CHUNK)
            if not rows:
                return
            for name, group in groupby(rows, key=itemgetter(3)):
                group = list(group)
                cid, step = campaigns[name]
                p = _prepared(ws, seq, step, prepared)
                ids = add_deliveries(db, cid, [(r[1], r[2]) for r in group])
                end = expiry(p.expires)
                if end is not None and at >= end:
                    _skip(db, ids, f"its offer expired ({p.expires})")
                nxt = next_step(steps, name)
                db.conn.executemany(
                    """UPDATE enrollments SET step = ?, step_at = ?, next_step = ?, next_due = ?,
                       state = ?, updated = ? WHERE id = ?""",
                    [
                        (
                            name,
                            stamp,
                            nxt["name"] if nxt else None,
                            stamp + nxt["after"] if nxt else None,
                            ACTIVE if nxt else FINISHED,
                            stamp,
                            r[0],
                        )
                        for r in group
                    ],
                )


def _wait_for_held(db: Database, sequence_id: int) -> int:
    """Readers whose step's message is held back for them (the quiet period, the
    frequency cap) pass no further step before it may go: their next step is due
    its ``after`` from then, so the steps arrive in their order. Read from the held
    rows alone (by the state index), written only when a reader moves; how many."""
    after = {s["name"]: s["after"] for s in _step_rows(db, sequence_id)[0]}
    rows = db.execute(
        # CROSS JOIN keeps this order (the sequence's steps, their held rows by the
        # state index, then each one's reader): left to itself, SQLite walked every
        # enrolment of every sequence.
        f"""SELECT e.id, e.next_due, e.next_step, max(d.next_unix)
            FROM campaigns c CROSS JOIN deliveries d ON d.campaign_id = c.id
            CROSS JOIN enrollments e ON e.sequence_id = c.sequence_id
              AND e.subscriber_id = d.subscriber_id AND e.step = c.step
            WHERE c.sequence_id = ? AND d.state = 'held_back' AND e.state = '{ACTIVE}'
            GROUP BY e.id""",
        [sequence_id],
    ).fetchall()
    stamp = seconds()
    moved = [
        (until + after[nxt], stamp, eid)
        for eid, due, nxt, until in rows
        if nxt in after and due is not None and until + after[nxt] > due
    ]
    if moved:
        with immediate(db):
            db.conn.executemany(
                f"""UPDATE enrollments SET next_due = max(next_due, ?), updated = ?
                    WHERE id = ? AND state = '{ACTIVE}'""",
                moved,
            )
    return len(moved)


def _skip(db: Database, ids: list[int], why: str) -> None:
    """Mark new deliveries ``skipped`` with the reason (they are never claimed)."""
    db.execute(
        """UPDATE deliveries SET state = 'skipped', phase = NULL, last_reply = ?
           WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'""",
        [why, json.dumps(list(ids))],
    )


def _send_steps(
    ws: Workspace, sid: int, seq: Sequence, limit: int | None, prepared: dict, first_only: bool
) -> list[StepOutcome]:
    """Send each step whose outbox has messages due (new ones, a run's left-overs,
    deferred or held back for their reader and now due); a selling step's claims
    go through the respect check, as a campaign's do."""
    db = ws.db
    now = seconds()
    first = seq.steps[0].name
    _steps, campaigns = _step_rows(db, sid)
    sold = Sold(sid, tuple(s.product for s in seq.selling), tuple(s.offer for s in seq.selling))
    outcomes = []
    for cid, name in db.execute(
        """SELECT c.id, c.step FROM campaigns c WHERE c.sequence_id = ?
           AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = c.id
                        AND d.state IN ('pending', 'sending'))
                OR EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = c.id
                           AND d.state IN ('deferred', 'held_back') AND d.next_unix <= ?))
           ORDER BY c.id""",
        [sid, now],
    ).fetchall():
        if first_only and name != first:
            continue
        p = _prepared(ws, seq, campaigns[name][1], prepared)
        respect = respect_for(db, ws.settings, p.campaign, p.expires, sold)
        summary = send_outbox(
            ws, p, cid, RunSummary(campaign=p.campaign.slug), limit=limit, respect=respect
        )
        outcomes.append(StepOutcome(p.campaign.slug, "sent", summary))
        if summary.stopped:
            break
    return outcomes
