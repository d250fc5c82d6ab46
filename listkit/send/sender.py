"""Sending a campaign: under the send lock, its outbox built, its runs, its summary;
and the dry run that writes the messages instead.

The rule: one `listkit send` per database at a time (``send_lock``, in the
database's folder); a send first folds the marks a killed run left and
recovers its rows, so nothing is sent twice, then sends what is due with
``run.Run`` (see there for the rules of a run) and records the campaign done
only when every message ended sent, held out or skipped.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from listkit.db import clock, describe_db_error
from listkit.errors import (
    HeaderInjection,
    InputError,
    ListkitError,
    SendError,
    TemplateError,
)
from listkit.files import write_private
from listkit.mail.compose import Problem
from listkit.mail.tracking import new_token
from listkit.runlock import run_lock
from listkit.send.campaigns import (
    campaign_row,
    iter_audience,
    register,
    set_state,
    without_holdout,
)
from listkit.send.marks import fold_marks
from listkit.send.outbox import (
    Result,
    build_outbox,
    counts,
    held_and_skipped,
    recover,
    top_up,
)
from listkit.send.prepare import Prepared, prepare
from listkit.send.render import render_processes
from listkit.send.respect import Respect, respect_for
from listkit.send.run import Run, run_loop
from listkit.send.sequences import check_ready
from listkit.send.variants import assign_variant, rest_due
from listkit.workspace import Workspace

LOCK_NAME = ".listkit-send.lock"


@contextlib.contextmanager
def send_lock(root: Path):
    """Hold the send lock in ``root``; raise AlreadyRunning if another run has it.

    ``root`` is the database's folder (the workspace, unless LISTKIT_DB points
    elsewhere): two workspaces sharing one database share the lock, or the
    second run's recovery would hand the first run's claimed rows out again."""
    with run_lock(
        root / LOCK_NAME,
        lambda holder: (
            f"another listkit send is running in {root} (pid {holder}); "
            "it will finish the work, nothing was sent by this run"
        ),
    ):
        yield


@dataclass
class RunSummary:
    campaign: str
    this_run: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    recovered: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    topped_up: tuple[int, int] | None = None  # --top-up: (newcomers, of which held out)
    held_back: list[dict] = field(default_factory=list)  # outbox.held_and_skipped's

    @property
    def complete(self) -> bool:
        """Every message ended sent, held out or skipped (none waits, held back
        for its reader, to be sent by a later `send --due`)."""
        waiting = ("pending", "sending", "deferred", "held_back")
        return all(self.totals.get(s, 0) == 0 for s in waiting)

    @property
    def ok(self) -> bool:
        bad = ("pending", "sending", "deferred", "failed", "unknown")
        return self.stopped is None and all(self.totals.get(s, 0) == 0 for s in bad)


def send_campaign(
    ws: Workspace,
    slug: str,
    *,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    batch: int = 200,
    prepared: Prepared | None = None,
    newcomers: bool = False,
) -> RunSummary:
    """Send (or resume) a campaign under the workspace's send lock.

    ``newcomers`` (``--top-up``): first add to the outbox of a campaign already
    sent whoever is in its audience now and has no row in it yet.
    """
    started = time.monotonic()
    with send_lock(ws.settings.db_path.parent):
        p = prepared or prepare(ws, slug)
        db = ws.db
        check_ready(db, p.campaign, p.expires)
        summary = RunSummary(campaign=slug)
        # Read first: a malformed setting stops the send before anything is written.
        respect = respect_for(db, ws.settings, p.campaign, p.expires)
        cid = _open_outbox(db, p, slug, newcomers, summary)
        return send_outbox(
            ws,
            p,
            cid,
            summary,
            limit=limit,
            on_start=on_start,
            on_result=on_result,
            batch=batch,
            started=started,
            respect=respect,
        )


def send_outbox(
    ws: Workspace,
    p: Prepared,
    cid: int,
    summary: RunSummary,
    *,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    batch: int = 200,
    started: float | None = None,
    respect: Respect | None = None,
) -> RunSummary:
    """Send what the outbox of campaign ``cid`` holds due; the caller holds the send lock.

    A run killed before left marks and ``sending`` rows: they are folded and
    recovered first, so nothing is sent twice."""
    started = time.monotonic() if started is None else started
    slug = p.campaign.slug
    db = ws.db
    # Marks left by a run that died first, so that its rows whose content
    # may be out become unknown, not pending.
    fold_marks(db, ws.settings.db_path)
    summary.recovered = recover(db, cid)
    set_state(db, cid, "sending")
    before = counts(db, cid)
    due = before["pending"] + before["deferred"] + before["held_back"]
    if limit is not None:
        due = min(due, limit)
    if on_start is not None:
        on_start(due)
    try:
        _run_parts(
            ws,
            p,
            cid,
            summary,
            due=due,
            limit=limit,
            batch=batch,
            on_result=on_result,
            respect=respect,
        )
    except sqlite3.Error as e:
        # The database refused a write mid-run (locked past the timeout,
        # disk full): nothing more was sent. Rows not yet recorded stay
        # 'sending' at the phase they reached, and the next run resolves
        # them (pending again, or unknown if their content may be out).
        raise SendError(
            f"{describe_db_error(ws.settings.db_path, e)}; sending stopped, and the next "
            f"`listkit send {slug}` resumes every message not recorded as sent"
        ) from None
    finally:
        summary.totals = counts(db, cid)
        if summary.totals["held_back"]:
            summary.held_back = held_and_skipped(db, cid)["held_back"]
        if summary.complete:
            # Test-then-send: the rest waits for the winner (`send --due`).
            set_state(db, cid, "testing" if summary.totals.get("reserved") else "done")
    summary.elapsed = time.monotonic() - started
    return summary


def _open_outbox(db, p: Prepared, slug: str, newcomers: bool, summary: RunSummary) -> int:
    """The campaign's id, its outbox built (or topped up with ``newcomers``)."""
    row = campaign_row(db, slug)
    if row is not None and row["state"] == "testing":
        _due, when = rest_due(db, p.campaign, clock())
        raise ListkitError(
            f"campaign {slug} is testing its variants: the rest gets the winner by "
            f"`listkit send --due` from {when}"
        )
    if newcomers:
        if row is None or row["started"] is None:
            raise ListkitError(
                f"campaign {slug} has not been sent yet, so it has no newcomers: "
                f"send it with `listkit send {slug}`"
            )
        summary.topped_up = top_up(db, row["id"], p.campaign)
        return row["id"]
    offer = p.composer.offer
    cid = register(db, p.campaign, digest=offer.digest, coupon=offer.coupon)
    build_outbox(db, cid, p.campaign)
    return cid


def _run_parts(
    ws: Workspace,
    p: Prepared,
    cid: int,
    summary: RunSummary,
    *,
    due: int,
    limit: int | None,
    batch: int,
    on_result: Callable[[Result], None] | None,
    respect: Respect | None,
) -> None:
    """Send the due rows: a campaign testing offers one variant's rows at a time,
    each with its own offer's composer; stop at the first run that stopped."""
    parts = [(v, p.composers[v]) for v in p.campaign.variants] or [(None, p.composer)]
    for variant, composer in parts:
        left = None if limit is None else limit - sum(summary.this_run.values())
        if left is not None and left <= 0:
            break
        run = Run(
            compose_processes=render_processes(
                ws.settings, due, signed=composer.signer is not None
            ),
            db_path=ws.settings.db_path,
            campaign_id=cid,
            campaign=p.campaign,
            composer=composer,
            smtp=p.smtp,
            sender_address=p.sender_address,
            bounce_address=p.bounce_address,
            limit=left,
            batch=batch,
            on_result=on_result,
            variant=variant,
            respect=respect,
        )
        try:
            for state, n in run_loop(run.run()).items():
                summary.this_run[state] = summary.this_run.get(state, 0) + n
        finally:
            summary.stopped = run.stopped
        if run.stopped:
            break


def dry_run(
    ws: Workspace, slug: str, directory: Path, limit: int | None = None
) -> tuple[int, list[Problem], int]:
    """Write one .eml per recipient the campaign would mail into ``directory``;
    send and record nothing (the held-out group gets no message, as in a send).

    A recipient whose message cannot be built is listed, never a reason to stop:
    (messages written, problems, held out).
    """
    p = prepare(ws, slug, recorded=False)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"--dry-run {directory}: cannot create the folder ({e.strerror})"
        ) from None
    written, problems, held = 0, [], Counter()
    audience = without_holdout(p.campaign, iter_audience(ws.db, p.campaign), held)
    for subscriber, list_slug, title in audience:
        if limit is not None and written + len(problems) >= limit:
            break
        composer = p.composer
        if p.campaign.variants:  # an offer test: the offer of this recipient's draw
            c = p.campaign
            composer = p.composers[assign_variant(slug, subscriber["key"], c.variants, c.split)]
        try:
            composed = composer.compose(
                subscriber=subscriber, list_slug=list_slug, list_title=title, token=new_token()
            )
        except (TemplateError, HeaderInjection) as e:
            problems.append(Problem(subscriber["email"], str(e)))
            continue
        safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", subscriber["email"])[:100]
        write_private(directory / f"{written + 1:06d}-{safe}.eml", composed.data)
        written += 1
    return written, problems, held["held_out"]
