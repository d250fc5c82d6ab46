"""Enrolments: which reader is in which sequence, and where they are in it.

A sequence (``sequences/<slug>.toml``, read and checked by
``send.sequence_files``) is known to the database as a ``sequences`` row:
its trigger (``kind`` joined or bought, ``target`` a list's slug, or
``anything``, ``product:NAME``, ``offer:SLUG``), its exits (targets of
purchases that end it), every step it ever had in order (JSON: name, offer,
after in seconds, sells, product, removed), its first step (``first_step``,
due ``first_after`` seconds after the trigger) and ``created``, the moment
listkit first read it.
Each step is also a ``campaigns`` row (slug ``<sequence>/<step>``,
``sequence_id``, ``step``), so a step's messages are deliveries like a
campaign's: one outbox, one attribution, one report.

An ``enrollments`` row is one reader in one sequence (at most one: a reader
enters a sequence once). ``state`` is ``active`` (``next_step`` is due at
``next_due``), ``finished``, ``exited`` (``exit_reason``) or ``held_out``
(kept back, never mailed, to measure the sequence's lift; decided when the
first step is due). ``step`` and ``step_at`` are the last step passed and
when; ``trigger_at`` and ``trigger_ref`` (``list:ID``, ``sale:ID``) say what
enrolled the reader, and ``sale_id`` the purchase of a ``bought:``
sequence. Times in this table are Unix seconds.

The rule: a reader is enrolled where the trigger happens, in the same
transaction (a confirmation, ``subscribers add``, an import into a sequence
with ``imported = "join"``, a sale stored by a webhook or an import), and
only into a sequence that existed before the trigger's time: creating a
sequence never reaches back to readers who joined or bought before. A buyer
enters a ``bought:`` sequence only while they are an active member of a list
(its messages go through the first such list): listkit mails only people who
subscribed. A purchase named by a sequence's ``exit`` and a refund of the
purchase that started a ``bought:`` sequence end it in the sale's own
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlite_utils import Database

from listkit.db import seconds
from listkit.vocab import ACTIVE, EXITED, ORDER_SQL, REFUNDED

# A sale (alias ``{sale}``) matches a purchase target (``anything``,
# ``product:NAME``, ``offer:SLUG``) given as the SQL expression ``{target}``.
MATCHES = (
    "({target} = 'anything' OR {target} = 'product:' || {sale}.product "
    "OR {target} = 'offer:' || {sale}.offer)"
)
# The reader a sale ``s`` is from: the recipient of the delivery it is
# attributed to, else the subscriber with the buyer's address.
BUYER = """coalesce((SELECT d.subscriber_id FROM deliveries d WHERE d.id = s.delivery_id),
                    (SELECT b.id FROM subscribers b WHERE b.key = s.email_key))"""

_COLUMNS = """(sequence_id, subscriber_id, list_id, sale_id, state, trigger_at, trigger_ref,
               next_step, next_due, created)"""
# The first step of sequence ``q`` and when it is due after a trigger at ``{at}``.
_FIRST = "q.first_step, {at} + q.first_after"


def enrol_joined(
    db: Database, subscriber_id: int, list_id: int, *, at: datetime | None = None
) -> int:
    """Enrol a reader who joined a list (confirmed, or added by hand) into the
    list's ``joined:`` sequences; rows added. Inside the caller's transaction."""
    when = seconds(at)
    return db.execute(
        f"""INSERT OR IGNORE INTO enrollments {_COLUMNS}
            SELECT q.id, ?, ?, NULL, '{ACTIVE}', ?, 'list:' || q.list_id,
                   {_FIRST.format(at="?")}, ?
            FROM sequences q
            WHERE q.kind = 'joined' AND q.list_id = ? AND q.created <= ?
              AND q.first_step IS NOT NULL""",
        [subscriber_id, list_id, when, when, seconds(), list_id, when],
    ).rowcount


def enrol_imported(
    db: Database, list_id: int, import_id: int, *, at: datetime | None = None
) -> int:
    """Enrol the members an import made (memberships of import ``import_id``, active)
    into the list's ``joined:`` sequences that say ``imported = "join"``; rows
    added. Inside the import's transaction."""
    when = seconds(at)
    return db.execute(
        f"""INSERT OR IGNORE INTO enrollments {_COLUMNS}
            SELECT q.id, m.subscriber_id, m.list_id, NULL, '{ACTIVE}', ?, 'list:' || q.list_id,
                   {_FIRST.format(at="?")}, ?
            FROM sequences q JOIN memberships m ON m.list_id = q.list_id
            WHERE q.kind = 'joined' AND q.imported = 'join' AND q.list_id = ?
              AND q.created <= ? AND q.first_step IS NOT NULL
              AND m.import_id = ? AND m.status = 'active'""",
        [when, when, seconds(), list_id, when, import_id],
    ).rowcount


def on_sales(db: Database, sale_ids: Iterable[int]) -> dict[str, int]:
    """What stored sales do to sequences, inside the sale's transaction: a buyer
    enters the ``bought:`` sequences the sale matches (existing before the sale's
    time, the buyer an active member of a list); a purchase an active reader's
    sequence names in ``exit`` ends it for them (a purchase after they entered,
    other than the one that enrolled them); a refunded sale ends the sequences it
    started. Counts: enrolled, exited."""
    ids = json.dumps(list(sale_ids))
    stamp = seconds()
    enrolled = db.execute(
        f"""INSERT OR IGNORE INTO enrollments {_COLUMNS}
            SELECT q.id, b.sid,
                   (SELECT min(m.list_id) FROM memberships m
                    WHERE m.subscriber_id = b.sid AND m.status = 'active'),
                   s.id, '{ACTIVE}', unixepoch(s.at), 'sale:' || s.id,
                   {_FIRST.format(at="unixepoch(s.at)")}, ?
            FROM sales s JOIN (SELECT s.id AS sale_id, {BUYER} AS sid FROM sales s
                               WHERE s.id IN (SELECT value FROM json_each(?))) b
              ON b.sale_id = s.id
            JOIN sequences q ON q.kind = 'bought' AND {MATCHES.format(target="q.target", sale="s")}
            WHERE s.status IN {ORDER_SQL} AND b.sid IS NOT NULL
              AND q.created <= unixepoch(s.at) AND q.first_step IS NOT NULL
              AND EXISTS (SELECT 1 FROM memberships m
                          WHERE m.subscriber_id = b.sid AND m.status = 'active')
            ORDER BY s.at, s.id""",
        [stamp, ids],
    ).rowcount
    exited = db.execute(
        f"""UPDATE enrollments SET state = '{EXITED}', exit_reason = 'refunded', exit_at = ?,
               next_due = NULL, updated = ?
            WHERE state = '{ACTIVE}' AND sale_id IN (
              SELECT id FROM sales WHERE id IN (SELECT value FROM json_each(?))
              AND status = '{REFUNDED}')
            RETURNING id""",
        [stamp, stamp, ids],
    ).fetchall()
    exited += db.execute(
        f"""UPDATE enrollments SET state = '{EXITED}', exit_reason = 'bought', exit_at = ?,
               next_due = NULL, updated = ?
            WHERE id IN (
              SELECT e.id FROM sales s
              JOIN enrollments e ON e.subscriber_id = {BUYER} AND e.state = '{ACTIVE}'
              JOIN sequences q ON q.id = e.sequence_id
              WHERE s.id IN (SELECT value FROM json_each(?)) AND s.status IN {ORDER_SQL}
                AND unixepoch(s.at) >= e.trigger_at AND e.sale_id IS NOT s.id
                AND EXISTS (SELECT 1 FROM json_each(q.exits) x
                            WHERE {MATCHES.format(target="x.value", sale="s")}))
            RETURNING id""",
        [stamp, stamp, ids],
    ).fetchall()
    if exited:
        # Their step messages still waiting in the outbox stay there, unsent.
        db.execute(
            """UPDATE deliveries SET state = 'skipped', phase = NULL,
                   last_reply = 'the sequence ended for this reader'
               WHERE state IN ('pending', 'deferred') AND id IN (
                 SELECT d.id FROM enrollments e
                 JOIN campaigns c ON c.sequence_id = e.sequence_id
                 JOIN deliveries d ON d.campaign_id = c.id AND d.subscriber_id = e.subscriber_id
                 WHERE e.id IN (SELECT value FROM json_each(?)))""",
            [json.dumps([r[0] for r in exited])],
        )
    return {"enrolled": enrolled, "exited": len(exited)}


ENROLLMENT_KEYS = ("sequence", "state", "step", "next_step", "next_due", "exit_reason", "entered")


def reader_enrollments(db: Database, subscriber_id: int) -> list[dict]:
    """Where a reader is in each sequence they entered (``subscribers show``)."""
    rows = db.execute(
        """SELECT q.slug, e.state, e.step, e.next_step, e.next_due, e.exit_reason, e.trigger_at
           FROM enrollments e JOIN sequences q ON q.id = e.sequence_id
           WHERE e.subscriber_id = ? ORDER BY e.trigger_at, q.slug""",
        [subscriber_id],
    ).fetchall()
    out = []
    for row in rows:
        item = dict(zip(ENROLLMENT_KEYS, row, strict=True))
        for key in ("next_due", "entered"):
            if item[key] is not None:
                item[key] = datetime.fromtimestamp(item[key], UTC).isoformat()
        out.append(item)
    return out
