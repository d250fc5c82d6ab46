"""The scheduler: `listkit send --due` sends every campaign whose time has come.

The rule: a campaign is sent when its send_at (or its follow-up condition) is
due and no later than max_late, else recorded missed, never sent late; a
campaign already sending is resumed; the rest of an offer test goes to the
winner once the test is judged. A refusal that later campaigns would meet too
(login, sender, disk) or another send holding the lock stops the round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from listkit.db import clock
from listkit.errors import (
    ListkitError,
    SendError,
)
from listkit.mail.offers import load_offer
from listkit.runlock import AlreadyRunning
from listkit.send.campaigns import (
    Campaign,
    campaign_row,
    campaign_slugs,
    due_status,
    format_duration,
    load_campaign,
    register,
    reschedule,
    rescheduled,
    set_state,
)
from listkit.send.outbox import due_rows
from listkit.send.sender import RunSummary, send_campaign, send_lock
from listkit.send.sequences import followup_status
from listkit.send.variants import release_rest, rest_due
from listkit.workspace import Workspace


@dataclass
class DueOutcome:
    """What `send --due` did with one campaign."""

    campaign: str
    action: str  # sent | missed | locked | error
    summary: RunSummary | None = None
    message: str = ""


def send_due(
    ws: Workspace, *, limit: int | None = None, at: datetime | None = None
) -> list[DueOutcome]:
    """Send every campaign whose send_at has come; mark those later than max_late missed.

    Campaigns without send_at, not yet due, done or missed are left alone; a
    missed one whose send_at has been edited since is scheduled again. A
    campaign already sending (or reopened by `listkit retry`) is resumed even
    past max_late, it started in time, and whether or not it has a send_at,
    once any of its messages is due (one held back for its reader, or deferred,
    is due at its next attempt).
    """
    at = at or clock()
    outcomes: list[DueOutcome] = []
    for slug in campaign_slugs(ws.campaigns_dir):
        outcome, stop = _due_one(ws, slug, at, limit)
        if outcome is not None:
            outcomes.append(outcome)
        if stop:
            break
    return outcomes


def _due_one(
    ws: Workspace, slug: str, at: datetime, limit: int | None
) -> tuple[DueOutcome | None, bool]:
    """What `send --due` does with one campaign (None: nothing to do), and whether
    the round stops there."""
    try:
        campaign = load_campaign(ws.campaigns_dir, slug)
        status, why = _status(ws, campaign, at)
    except ListkitError as e:
        return DueOutcome(slug, "error", message=str(e)), False
    row = campaign_row(ws.db, slug)
    if rescheduled(row, campaign):
        reschedule(ws.db, row["id"], campaign)
        row = campaign_row(ws.db, slug)
    state = row["state"] if row else None
    if state == "testing":  # test-then-send, sent by hand or not: the rest goes from here
        return _send_rest(ws, campaign, at, limit)
    if state == "sending":
        due, waiting = due_rows(ws.db, row["id"], at)
        if not due and waiting:
            return None, False  # every message left waits for its time (held back, deferred)
    if state in ("done", "missed") or (status in ("manual", "waiting") and state != "sending"):
        return None, False
    if status == "missed" and state != "sending":
        return _missed(ws, campaign, at, why), False
    try:
        return DueOutcome(slug, "sent", send_campaign(ws, slug, limit=limit)), False
    except AlreadyRunning as e:
        return DueOutcome(slug, "locked", message=str(e)), True
    except SendError as e:
        # The server or the database refused us (login, TLS, sender, disk):
        # the next campaign would meet the same refusal; a wrong password
        # must not be tried once per campaign.
        return DueOutcome(slug, "error", message=f"{e}; later campaigns wait"), True
    except ListkitError as e:
        return DueOutcome(slug, "error", message=str(e)), False


def _status(ws: Workspace, campaign: Campaign, at: datetime) -> tuple[str, str]:
    """(due_status or followup_status, why a follow-up is missed)."""
    if not campaign.follows:
        return due_status(campaign, at), ""
    expires = min(
        (e for o in campaign.offers if (e := load_offer(ws.offers_dir, o).expires)),
        default=None,
    )
    return followup_status(ws.db, campaign, at, expires)


def _send_rest(
    ws: Workspace, campaign: Campaign, at: datetime, limit: int | None
) -> tuple[DueOutcome | None, bool]:
    """An offer test judged: the rest gets the winner, and is sent."""
    slug = campaign.slug
    due, _when = rest_due(ws.db, campaign, at)
    if not due:
        return None, False
    try:
        # The database's lock, as the send's: a send from another workspace sharing
        # the database must not run while the rest is released.
        with send_lock(ws.settings.db_path.parent):
            pick = release_rest(ws.db, campaign)
    except AlreadyRunning as e:
        return DueOutcome(slug, "locked", message=str(e)), True
    chosen = f"{slug}: the rest ({pick['released']}) gets {pick['offer']}, {pick['why']}"
    try:
        return DueOutcome(slug, "sent", send_campaign(ws, slug, limit=limit), chosen), False
    except AlreadyRunning as e:
        return DueOutcome(slug, "locked", message=str(e)), True
    except ListkitError as e:
        return DueOutcome(slug, "error", message=str(e)), False


def _missed(ws: Workspace, campaign: Campaign, at: datetime, why: str) -> DueOutcome:
    """Record the campaign missed, and say why."""
    cid = register(ws.db, campaign, digest="", coupon=None)
    set_state(ws.db, cid, "missed")
    if why:
        return DueOutcome(campaign.slug, "missed", message=why)
    # Whole minutes: the seconds a cron run takes are noise here.
    minutes = round((at - campaign.send_at).total_seconds() / 60)
    late = format_duration(timedelta(minutes=minutes))
    return DueOutcome(
        campaign.slug,
        "missed",
        message=f"send_at {campaign.send_at.isoformat()} was {late} ago, more than "
        f"max_late {format_duration(campaign.max_late)}; not sent",
    )
