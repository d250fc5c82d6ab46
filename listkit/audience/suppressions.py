"""Suppressions: addresses that never receive a campaign again.

The rule: a suppressed address stays suppressed whatever a later import, add
or list says; only removing the suppression row itself (by hand) lifts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlite_utils import Database

from listkit.addresses import email_key, normalize_address
from listkit.db import immediate, now
from listkit.errors import InputError
from listkit.vocab import SUPPRESSION_REASONS

# A reader who unsubscribed through a message said no to the campaign that sent
# it and to every follow-up of it, whatever list those reach them through: the
# subscribers who did so for any campaign of the JSON array of ids bound to it.
# The evidence is a delivery's unsubscribe event, which only its signed link makes.
DECLINED = """SELECT d.subscriber_id FROM events e JOIN deliveries d ON d.id = e.delivery_id
              WHERE e.kind = 'unsubscribe'
                AND d.campaign_id IN (SELECT value FROM json_each(?))"""


def _deliveries_marked(event: str) -> str:
    """SQL for the ids of the deliveries a reader's answer is tied to: an event of the
    delivery matching ``event`` (on alias ``e``), or a suppression the delivery caused
    (its campaign, its reader) with one of the reasons given as the one parameter, a
    JSON list. A UNION: a delivery with both counts once."""
    return f"""
    SELECT e.delivery_id FROM events e WHERE e.delivery_id IS NOT NULL AND {event}
    UNION
    SELECT b.id FROM suppressions x
    JOIN subscribers s ON s.key = x.key
    JOIN deliveries b ON b.campaign_id = x.campaign_id AND b.subscriber_id = s.id
    WHERE x.campaign_id IS NOT NULL AND x.reason IN (SELECT value FROM json_each(?))"""


# The deliveries that bounced: a hard bounce reported for the delivery (by a DSN, a
# relay's webhook), or a bounce suppression the delivery caused (the server refused it,
# or it was the soft bounce that crossed LISTKIT_SOFT_BOUNCES).
BOUNCED_DELIVERIES = _deliveries_marked(
    "e.kind = 'bounce' AND json_extract(e.detail, '$.outcome') = 'hard'"
)
# The deliveries a reader unsubscribed through, whatever they chose: the one-click POST
# (RFC 8058) and the page's "this list" leave the delivery's unsubscribe event and an
# unsubscribed membership; "everything" and a pasted link also suppress, naming the
# campaign. Each reader's unsubscribe counts once, against that delivery's list.
UNSUBSCRIBED_DELIVERIES = _deliveries_marked("e.kind = 'unsubscribe'")


def suppress(
    db: Database,
    email: str,
    reason: str,
    *,
    campaign_id: int | None = None,
    source: str | None = None,
    note: str | None = None,
) -> bool:
    """Suppress ``email``; True if it was not suppressed before (the first reason is kept)."""
    if reason not in SUPPRESSION_REASONS:
        raise InputError(
            f"unknown suppression reason {reason!r} (use one of {', '.join(SUPPRESSION_REASONS)})"
        )
    cursor = db.execute(
        """INSERT INTO suppressions (key, email, reason, created, campaign_id, source, note)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
        [email_key(email), email.strip(), reason, now(), campaign_id, source, note],
    )
    return cursor.rowcount == 1


def suppress_many(
    db: Database, rows: Iterable[tuple[int, str]], reason: str, *, source: str
) -> dict:
    """Suppress (line, raw address) pairs; bad addresses are reported, never stop the rest."""
    summary = {"suppressed": 0, "already": 0, "rejected": 0, "errors": []}
    with immediate(db):
        for line, raw in rows:
            try:
                address = normalize_address(raw)
            except InputError as e:
                summary["rejected"] += 1
                summary["errors"].append({"line": line, "value": raw, "reason": str(e)})
                continue
            if suppress(db, address, reason, source=source):
                summary["suppressed"] += 1
            else:
                summary["already"] += 1
    return summary


def list_suppressions(db: Database) -> Iterator[dict]:
    cursor = db.execute(
        """SELECT s.email, s.reason, s.created, c.slug, s.source, s.note
           FROM suppressions s LEFT JOIN campaigns c ON c.id = s.campaign_id
           ORDER BY s.created, s.key"""
    )
    for email, reason, created, campaign, source, note in cursor:
        yield {
            "email": email,
            "reason": reason,
            "created": created,
            "campaign": campaign,
            "source": source,
            "note": note,
        }
