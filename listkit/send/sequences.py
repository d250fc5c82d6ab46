"""Follow-ups: a campaign that goes `after` a while to the recipients of the one it `follows`.

The rules: a follow-up goes only to subscribers the first campaign actually
mailed (state ``sent``), so the first's holdout stays clean; by default only
to those with no purchase since the first started (its ``[where]`` rules on
``bought``/``not_bought`` replace that default); it is due when the first
has finished plus ``after``, and never once its offer has expired. (The
audience conditions are ``campaigns.followup_condition`` and
``campaigns.not_bought_since_first``: every audience is built there.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from listkit.db import clock
from listkit.errors import ListkitError
from listkit.send.campaigns import followed_campaign, format_duration


def expiry(expires: str | None) -> datetime | None:
    """When an offer stops holding: its `expires` (a bare date: the next midnight UTC)."""
    if not expires:
        return None
    try:
        at = datetime.fromisoformat(expires)
    except ValueError:
        return None
    if len(expires.strip()) <= 10:
        return at.replace(tzinfo=UTC) + timedelta(days=1)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def followup_status(
    db: Database, campaign, at: datetime, expires: str | None = None
) -> tuple[str, str]:
    """('waiting' | 'due' | 'missed', why) for a follow-up at time ``at``."""
    row = followed_campaign(db, campaign.follows)
    if row is None or row[1] != "done" or not row[3]:
        return "waiting", f"waits for {campaign.follows} to finish sending"
    due_at = datetime.fromisoformat(row[3]) + (campaign.after or timedelta())
    end = expiry(expires)
    if end is not None and at >= end and at >= due_at:
        return "missed", f"its offer expired ({expires}); not sent"
    if at < due_at:
        return "waiting", f"due {due_at.isoformat(timespec='minutes')}"
    if campaign.max_late is not None and at - due_at > campaign.max_late:
        late = format_duration(timedelta(minutes=round((at - due_at).total_seconds() / 60)))
        return "missed", (
            f"due {due_at.isoformat(timespec='minutes')}, {late} ago, more than max_late "
            f"{format_duration(campaign.max_late)}; not sent"
        )
    return "due", ""


def check_ready(db: Database, campaign, expires: str | None, at: datetime | None = None) -> None:
    """Refuse to start a follow-up by hand before the first has finished, or after expiry."""
    if not campaign.follows:
        return
    row = followed_campaign(db, campaign.follows)
    mine = db.execute("SELECT state FROM campaigns WHERE slug = ?", [campaign.slug]).fetchone()
    if mine is not None and mine[0] == "sending":
        return  # resuming: it started in time
    if row is None or row[1] != "done":
        raise ListkitError(
            f"campaign {campaign.slug} follows {campaign.follows}, which has not finished "
            f"sending: send {campaign.follows} first"
        )
    end = expiry(expires)
    if end is not None and (at or clock()) >= end:
        raise ListkitError(
            f"campaign {campaign.slug}: its offer expired ({expires}); a follow-up is not sent "
            "after its offer's expires"
        )
