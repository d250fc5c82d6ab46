"""CLI commands: campaigns, send, status, retry, sink."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, emit_table, json_option, require_terminal
from listkit.db import clock
from listkit.errors import ListkitError, NotFound
from listkit.mail.compose import check_offer
from listkit.runlock import AlreadyRunning
from listkit.send.campaigns import (
    audience_count,
    campaign_row,
    campaign_slugs,
    current_state,
    describe_audience,
    format_duration,
    iter_audience,
    load_campaign,
    recorded_slugs,
    without_holdout,
)
from listkit.send.due import send_due
from listkit.send.outbox import bounced_after_sent, counts, held_and_skipped, problems, retry
from listkit.send.prepare import Prepared, prepare
from listkit.send.sender import RunSummary, send_campaign
from listkit.send.sender import dry_run as write_dry_run
from listkit.send.sequence_due import send_sequences
from listkit.send.sequences import followup_status
from listkit.send.single import send_test
from listkit.send.variants import assign_variant, campaign_share_warnings
from listkit.vocab import DELIVERY_STATES
from listkit.workspace import Workspace


@cli.group()
def campaigns() -> None:
    """List and check campaigns (campaigns/<slug>.toml)."""


@campaigns.command("ls")
@json_option
@pass_workspace
def campaigns_ls(ws: Workspace, json_: bool) -> None:
    """Show each campaign: offer, lists, schedule, state, audience and sent.

    The audience of a campaign that has started is the readers it chose (the
    held-out ones too), the same figure as `listkit report --by campaign`;
    before it starts, the readers it would choose now.

    A campaign file that cannot be read shows its error; the others are still
    shown, and the exit status is 1.

    \b
    Example:
        listkit campaigns ls
    """
    rows = []
    bad = 0
    for slug in campaign_slugs(ws.campaigns_dir):
        try:
            c = load_campaign(ws.campaigns_dir, slug)
        except ListkitError as e:
            rows.append({"campaign": slug, "state": f"ERROR: {e}"})
            bad += 1
            continue
        row = campaign_row(ws.db, slug)
        totals = counts(ws.db, row["id"]) if row else {}
        # Once queued, the audience is the readers the campaign chose (held out included),
        # as `report --by campaign` counts it; before, who would be chosen now.
        audience = sum(totals.values()) or None
        if audience is None:
            try:
                audience = sum(audience_count(ws.db, c).values())
            except NotFound:
                audience = None
            except ListkitError as e:  # a rule, or a broken file up a follow-up's chain
                rows.append({"campaign": slug, "state": f"ERROR: {e}"})
                bad += 1
                continue
        rows.append(
            {
                "campaign": slug,
                "offer": ",".join(c.offers),
                "lists": ",".join(c.lists),
                "send_at": c.send_at.isoformat()
                if c.send_at
                else (f"{format_duration(c.after)} after {c.follows}" if c.follows else "manual"),
                "state": current_state(row, c) if row or not c.follows else "follow-up",
                "audience": audience,
                "sent": totals.get("sent", 0),
            }
        )
    if json_:
        emit_json(rows)
    else:
        emit_table(
            rows,
            ["campaign", "offer", "lists", "send_at", "state", "audience", "sent"],
            empty=f"No campaigns in {ws.campaigns_dir}.",
        )
    if bad:
        sys.exit(1)


@campaigns.command("check")
@click.argument("slug")
@pass_workspace
def campaigns_check(ws: Workspace, slug: str) -> None:
    """Check a campaign without sending: settings, audience, every message renders.

    No connection is opened.

    \b
    Example:
        listkit campaigns check launch
    """
    p = prepare(ws, slug)
    c = p.campaign
    lines, per_list = describe_audience(ws.db, c)
    offers = f"variants {', '.join(c.variants)}" if c.variants else f"offer {c.offer}"
    click.echo(f"Campaign {slug}: {offers}, SMTP {p.smtp.masked()}")
    for line in lines:
        click.echo(f"  {line}")
    for list_slug, n in per_list.items():
        click.echo(f"  {list_slug}: {n} recipients")
    for warning in campaign_share_warnings(ws.db, c):
        click.echo(f"  Warning: {warning}")
    if c.exclude_lists:
        click.echo(f"  excluding members of: {', '.join(c.exclude_lists)}")
    # Every recipient is checked and every failure listed (no limit): the count
    # must be the campaign's, not that of the first few. With variants, each
    # recipient is rendered with the offer of its draw.
    checked, found = 0, []
    for offer_slug, composer in p.composers.items():
        # Those the campaign will mail: the held-out group is not "ready to send"
        # (each pass goes through the whole audience, and counts it again).
        held: Counter = Counter()
        audience = without_holdout(c, iter_audience(ws.db, c), held)
        if c.variants:
            audience = (
                a
                for a in audience
                if assign_variant(slug, a[0]["key"], c.variants, c.split) == offer_slug
            )
        n, problems_found = check_offer(composer, audience, limit=sys.maxsize)
        checked, found = checked + n, found + problems_found
    for problem in found:
        click.echo(f"  {problem.subscriber}: {problem.message}", err=True)
    if found:
        raise ListkitError(f"campaign {slug}: {len(found)} of {checked} messages fail to render")
    kept = f" ({held['held_out']} more held out: never mailed)" if held["held_out"] else ""
    ready = "ready to send"
    if c.follows:
        # A follow-up goes when `send --due` finds it due, not when its check passes.
        state, why = followup_status(ws.db, c, clock(), p.expires)
        if state == "waiting":
            ready = f"not due yet: {why}"
        elif state == "missed":
            ready = why
    click.echo(f"OK: {checked} messages render; {ready}{kept}.")


def _print_summary(s: RunSummary) -> None:
    t = s.totals
    if s.topped_up is not None:
        click.echo(f"{s.campaign}: top-up: {s.topped_up[0]} newcomers ({s.topped_up[1]} held out)")
    parts = [f"{t.get(k, 0)} {k.replace('_', ' ')}" for k in t if t.get(k)]
    run = ", ".join(f"{n} {k}" for k, n in s.this_run.items()) or "nothing"
    click.echo(f"{s.campaign}: this run {run} in {s.elapsed:.1f}s; totals: {', '.join(parts)}")
    if s.recovered.get("unknown") or s.recovered.get("pending"):
        click.echo(
            f"  resumed after an interrupted run: {s.recovered['pending']} back to pending, "
            f"{s.recovered['unknown']} unknown"
        )
    for held in s.held_back:
        click.echo(
            f"  {held['messages']} held back ({held['reason']}) until {_minute(held['until'])} "
            "at the latest: `listkit send --due` (cron) sends each when its reader may have it"
        )
    if s.stopped:
        click.echo(f"  stopped: {s.stopped}", err=True)
    if t.get("unknown") and "/" in s.campaign:  # a step of a sequence
        sequence = s.campaign.split("/")[0]
        click.echo(
            f"  {t['unknown']} unknown: the connection died after DATA began, the server may "
            f"have them. Check its log for their Message-IDs, then `listkit sequences retry "
            f"{sequence} --unknown` for those it does not have.",
            err=True,
        )
    elif t.get("unknown"):
        click.echo(
            f"  {t['unknown']} unknown: the connection died after DATA began, the server may "
            f"have them. Check its log for their Message-IDs (`listkit status {s.campaign}`), "
            f"then `listkit retry {s.campaign} --unknown` for those it does not have.",
            err=True,
        )


def _minute(stored: str | None) -> str:
    """A stored time, to the minute: ``2026-12-09 16:40 UTC``."""
    return f"{stored[:10]} {stored[11:16]} UTC" if stored else "-"


def _run_send(
    ws: Workspace,
    p: Prepared,
    limit: int | None,
    quiet: bool,
    newcomers: bool = False,
) -> RunSummary:
    slug = p.campaign.slug
    if quiet or not sys.stdout.isatty():
        return send_campaign(ws, slug, limit=limit, newcomers=newcomers, prepared=p)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rate]:.0f} msg/s"),
        TimeRemainingColumn(),
    )
    state = {"task": None, "start": time.monotonic()}

    def on_start(total: int) -> None:
        state["task"] = progress.add_task(f"sending {slug}", total=total, rate=0.0)

    def on_result(_result) -> None:
        elapsed = max(time.monotonic() - state["start"], 1e-6)
        task = progress.tasks[0]
        progress.update(state["task"], advance=1, rate=(task.completed + 1) / elapsed)

    with progress:
        return send_campaign(
            ws,
            slug,
            limit=limit,
            on_start=on_start,
            on_result=on_result,
            newcomers=newcomers,
            prepared=p,
        )


@cli.command()
@click.argument("slug", required=False)
@click.option("--due", is_flag=True, help="Send every campaign whose send_at has come (for cron).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--dry-run",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one .eml per recipient into this folder; send nothing.",
)
@click.option("--test-to", metavar="ADDR", help="Send one sample message to ADDR; record nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Send at most this many messages.")
@click.option(
    "--top-up",
    is_flag=True,
    help="Also mail who joined the campaign's lists since it was sent (once each).",
)
@pass_workspace
def send(
    ws: Workspace,
    slug: str | None,
    due: bool,
    yes: bool,
    dry_run: Path | None,
    test_to: str | None,
    limit: int | None,
    top_up: bool,
) -> None:
    """Send campaign SLUG, or resume it: nothing is ever sent twice.

    On a terminal it shows the audience and asks first; --yes skips that, and
    without a terminal --yes is required. Exit status 0 when every message
    ended sent (or held out, or skipped as unsubscribed), or is held back for
    its reader (LISTKIT_QUIET_AFTER_PURCHASE, LISTKIT_FREQUENCY: `send --due`
    sends it when it may); 1 when any failed, deferred or unknown remain.

    A campaign's audience is fixed when it is first sent. --top-up adds whoever
    is in the audience now and was not yet (same holdout, exclusions and
    suppressions), and sends to them: each newcomer once.

    \b
    Examples:
        listkit send launch --dry-run out/      # look first
        listkit send launch --test-to me@example.com
        listkit send launch --yes
        listkit send launch --top-up --yes     # later subscribers too
        listkit send --due                     # from cron: */5 * * * *
    """
    if top_up and (due or dry_run or test_to):
        raise click.UsageError(
            "--top-up goes with a campaign SLUG alone, not --due, --dry-run or --test-to"
        )
    if due:
        if slug or dry_run or test_to:
            raise click.UsageError("--due sends scheduled campaigns: give no SLUG with it")
        _send_due(ws, limit)
        return
    if not slug:
        raise click.UsageError("name a campaign (see `listkit campaigns ls`), or use --due")
    if dry_run is not None:
        n, found, held = write_dry_run(ws, slug, dry_run, limit)
        for problem in found:
            click.echo(f"  {problem.subscriber}: {problem.message}", err=True)
        if found:
            raise ListkitError(
                f"campaign {slug}: {len(found)} of {n + len(found)} recipients cannot be "
                f"rendered (listed above); the other {n} are in {dry_run}. Nothing was sent."
            )
        kept = f" ({held} more held out: never mailed)" if held else ""
        click.echo(f"Wrote {n} messages to {dry_run}{kept}; nothing was sent.")
        return
    if test_to is not None:
        composed, reply = send_test(ws, slug, test_to)
        click.echo(f"Sent a test of {slug} to {test_to} ({composed.message_id}): {reply}")
        return
    p = prepare(ws, slug)
    if not yes:
        require_terminal(f"listkit send {slug} --yes", " (look first with --dry-run DIR)")
        per_list = audience_count(ws.db, p.campaign)
        row = campaign_row(ws.db, slug)
        done = counts(ws.db, row["id"]) if row else {}
        click.echo(f"Campaign {slug}: offer {p.campaign.offer} via {p.smtp.masked()}")
        for list_slug, n in per_list.items():
            click.echo(f"  {list_slug}: {n} recipients")
        if done.get("sent"):
            click.echo(f"  already sent: {done['sent']} (they will not get it again)")
        if top_up:
            click.echo("  top-up: only those not yet in the campaign's outbox get it")
        click.confirm("Send now?", abort=True)
    try:
        summary = _run_send(ws, p, limit, quiet=False, newcomers=top_up)
    except AlreadyRunning as e:
        raise ListkitError(str(e)) from None
    _print_summary(summary)
    _warn_shares(ws, p.campaign)
    if not summary.ok:
        sys.exit(1)


def _warn_shares(ws: Workspace, campaign) -> None:
    """After a run of an offer test: the shares that gave nobody (see variants)."""
    for warning in campaign_share_warnings(ws.db, campaign):
        click.echo(f"  Warning: {warning}")


def _send_due(ws: Workspace, limit: int | None) -> None:
    failed = False
    outcomes = send_due(ws, limit=limit)
    for outcome in outcomes:
        if outcome.action == "sent":
            if outcome.message:
                click.echo(outcome.message)
            _print_summary(outcome.summary)
            _warn_shares(ws, load_campaign(ws.campaigns_dir, outcome.campaign))
            failed = failed or not outcome.summary.ok
        elif outcome.action == "locked":
            click.echo(outcome.message)  # another run is on it: not a failure
        elif outcome.action == "missed":
            click.echo(f"{outcome.campaign}: missed ({outcome.message})")
        else:
            click.echo(f"{outcome.campaign}: {outcome.message}", err=True)
            failed = True
    if not any(o.action == "locked" for o in outcomes):
        failed = _send_sequences(ws, limit) or failed
    if failed:
        sys.exit(1)


def _send_sequences(ws: Workspace, limit: int | None) -> bool:
    """The sequences' due steps (`send --due`); whether one failed."""
    failed = False
    for outcome in send_sequences(ws, limit=limit):
        if outcome.action == "sent":
            _print_summary(outcome.summary)
            failed = failed or not outcome.summary.ok
        elif outcome.action == "locked":
            click.echo(outcome.message)
        else:
            click.echo(f"sequence {outcome.step}: {outcome.message}", err=True)
            failed = True
    return failed


STATUS_COLUMNS = ("sent", "failed", "held_out", "pending", "deferred", "unknown", "skipped")


def _status_all(ws: Workspace, json_: bool) -> None:
    """Every campaign (its file, or its row once sent): its state and counts."""
    rows = []
    for slug in sorted(set(campaign_slugs(ws.campaigns_dir)) | set(recorded_slugs(ws.db))):
        row = campaign_row(ws.db, slug)
        try:
            c = load_campaign(ws.campaigns_dir, slug)
            state = current_state(row, c) if row or not c.follows else "follow-up"
        except ListkitError as e:
            state = row["state"] if row else f"ERROR: {e}"
        totals = {k: v for k, v in counts(ws.db, row["id"]).items() if v} if row else {}
        rows.append(
            {
                "campaign": slug,
                "state": state,
                "started": row["started"] if row else None,
                "counts": totals,
            }
        )
    if json_:
        emit_json(rows)
        return
    # Held back (for the reader: LISTKIT_QUIET_AFTER_PURCHASE, LISTKIT_FREQUENCY)
    # only when some are.
    columns = STATUS_COLUMNS + (
        ("held_back",) if any("held_back" in r["counts"] for r in rows) else ()
    )
    emit_table(
        [
            {**r, **{k: r["counts"].get(k, 0) for k in columns}, "started": r["started"]}
            for r in rows
        ],
        ["campaign", "state", *columns, "started"],
        headers=["campaign", "state", *(k.replace("_", " ") for k in columns), "started"],
        empty=f"No campaigns in {ws.campaigns_dir}.",
    )
    if rows:
        click.echo("Each campaign's failed, unknown and deferred messages: listkit status CAMPAIGN")


@cli.command()
@click.argument("slug", required=False)
@json_option
@pass_workspace
def status(ws: Workspace, slug: str | None, json_: bool) -> None:
    """Counts per delivery state, and the failed, unknown, deferred and bounced rows.

    Messages held back for their reader (the quiet period after a purchase, the
    frequency cap) are counted per reason with the time the last may go;
    skipped ones per reason.

    Without SLUG: every campaign, one line each (its state and counts).

    A message the server accepted that a bounce report later says bounced
    stays counted as sent and is listed as bounced; nothing sends it again.

    \b
    Examples:
        listkit status
        listkit status launch
    """
    if slug is None:
        _status_all(ws, json_)
        return
    row = campaign_row(ws.db, slug)
    if row is None:
        _status_not_sent(ws, slug, json_)
        return
    totals = counts(ws.db, row["id"])
    # The Message-ID each message carried: derived from its token, on the sender's domain.
    mid = {"secret": ws.settings.secret_key(), "domain": ws.settings.sender_address()[1]}
    mid["domain"] = mid["domain"].rpartition("@")[2]
    bounced = bounced_after_sent(ws.db, row["id"], **mid)
    rows = problems(ws.db, row["id"], **mid) + bounced
    waits = held_and_skipped(ws.db, row["id"])
    if json_:
        emit_json(
            {
                "campaign": slug,
                "state": row["state"],
                "counts": totals,
                "bounced_after_sent": len(bounced),
                "problems": rows,
                **waits,
            }
        )
        return
    click.echo(f"Campaign {slug}: {row['state']} (started {row['started'] or '-'})")
    shown = {k.replace("_", " "): str(v) for k, v in totals.items()}
    if bounced:
        shown["sent"] += f" ({len(bounced)} bounced after it was sent: never sent again)"
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for held in waits["held_back"]:
        click.echo(
            f"  held back: {held['messages']} ({held['reason']}), the last until "
            f"{_minute(held['until'])}; `listkit send --due` sends each when it may"
        )
    if waits["skipped"]:
        reasons = ", ".join(f"{reason} {n}" for reason, n in waits["skipped"].items())
        click.echo(f"  skipped: {sum(waits['skipped'].values())} ({reasons})")
    if rows:
        emit_table(rows, ["email", "state", "attempts", "code", "reply", "message_id"])


def _status_not_sent(ws: Workspace, slug: str, json_: bool) -> None:
    """The status of a campaign in ``campaigns/`` that no send has started yet."""
    c = load_campaign(ws.campaigns_dir, slug)  # a clear error if it does not exist at all
    state = "follow-up" if c.follows else current_state(None, c)
    if json_:
        emit_json(
            {
                "campaign": slug,
                "state": state,
                "counts": dict.fromkeys(DELIVERY_STATES, 0),
                "bounced_after_sent": 0,
                "problems": [],
                "held_back": [],
                "skipped": {},
            }
        )
        return
    click.echo(f"Campaign {slug}: {state}, not sent yet")
    if c.follows:
        how = "says when it is due; `listkit send --due` sends it then."
    else:
        how = f"shows who it would go to; `listkit send {slug}` sends it."
    click.echo(f"  `listkit campaigns check {slug}` {how}")


@cli.command("retry")
@click.argument("slug")
@click.option("--unknown", "which", flag_value="unknown", help="Unknown rows (check the log).")
@click.option("--failed", "which", flag_value="failed", help="Failed rows (not suppressed ones).")
@click.option("--deferred", "which", flag_value="deferred", help="Deferred rows: due now.")
@pass_workspace
def retry_cmd(ws: Workspace, slug: str, which: str | None) -> None:
    """Queue unknown, failed or deferred messages again for the next `listkit send`.

    Use --unknown only after checking the server's log: those messages may
    have been delivered.

    \b
    Example:
        listkit retry launch --unknown && listkit send launch --yes
    """
    if which is None:
        raise click.UsageError("say which: --unknown, --failed or --deferred")
    row = campaign_row(ws.db, slug)
    if row is None:
        raise NotFound(f"campaign {slug} has not been sent yet")
    n = retry(ws.db, row["id"], which)
    click.echo(f"{n} {which} messages of {slug} will be sent by the next `listkit send {slug}`.")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=1025,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on; point LISTKIT_SMTP_URL at it.",
)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also store messages here, the envelope sender on top as Return-Path.",
)
def sink(host: str, port: int, maildir: Path | None) -> None:
    """Run a local capture SMTP server: accepts everything, delivers nothing.

    Point LISTKIT_SMTP_URL at smtp://127.0.0.1:1025 to try a campaign safely.
    Ctrl-C stops it.

    \b
    Example:
        listkit sink --maildir captured/
    """
    # Lazy: aiosmtpd loads for `listkit sink` alone.
    from listkit.send.sink import start_sink

    try:
        controller, _handler = start_sink(host, port, maildir=maildir, out=click.echo)
    except OSError as e:  # the port is taken, or the host is not this machine's
        reason = (os.strerror(e.errno) if e.errno else str(e)).lower()
        raise click.ClickException(
            f"listkit sink cannot listen on {host}:{port} ({reason}): "
            "choose another --port or --host"
        ) from None
    click.echo(f"listkit sink listening on {host}:{port}; Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
