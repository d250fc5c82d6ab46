"""Suppressions: addresses that never receive a campaign again.

The rule: a suppressed address stays suppressed whatever a later import, add
or list says; only removing the suppression row itself (by hand) lifts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlite_utils import Database

from listkit.db import immediate, now
from listkit.errors import InputError

# Every reason a suppression row can carry, the one list everything validates
# against: `suppress add --reason`, imports and the bounce effects.
UNSUBSCRIBED, HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT, MANUAL = (
    "unsubscribed",
    "hard_bounce",
    "soft_bounce",
    "complaint",
    "manual",
)
REASONS = (UNSUBSCRIBED, HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT, MANUAL)
# The reasons that count as bounced in reports.
BOUNCE_REASONS = (HARD_BOUNCE, SOFT_BOUNCE)

# A reader who unsubscribed through a message said no to the campaign that sent
# it and to every follow-up of it, whatever list those reach them through: the
# subscribers who did so for any campaign of the JSON array of ids bound to it.
# The evidence is a delivery's unsubscribe event, which only its signed link makes.
DECLINED = """SELECT d.subscriber_id FROM events e JOIN deliveries d ON d.id = e.delivery_id
              WHERE e.kind = 'unsubscribe'
                AND d.campaign_id IN (SELECT value FROM json_each(?))"""


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
    from listkit.audience.addresses import (
        email_key,  # the validator is not loaded for REASONS alone
    )

    if reason not in REASONS:
        raise InputError(f"unknown suppression reason {reason!r} (use one of {', '.join(REASONS)})")
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
    from listkit.audience.addresses import normalize_address

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
