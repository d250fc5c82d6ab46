"""CLI commands: sequences ls, check, show, pause, resume, enroll."""

from __future__ import annotations

import click

from listkit.audience.audiences import rules_from_options
from listkit.cli import cli, pass_workspace
from listkit.cli.output import confirm, emit_json, emit_table, json_option
from listkit.db import immediate
from listkit.send.campaigns import format_duration
from listkit.send.sequence_files import (
    enrol_existing,
    load_sequence,
    overview,
    retry_steps,
    set_paused,
    step_report,
    sync,
    sync_all,
)
from listkit.workspace import Workspace


@cli.group()
def sequences() -> None:
    """Messages that start from a reader's own moment: joining a list, or buying.

    A sequence is a file, sequences/<slug>.toml; `listkit send --due` (cron)
    sends its steps. See docs/sequences.md.
    """


@sequences.command("ls")
@json_option
@pass_workspace
def sequences_ls(ws: Workspace, json_: bool) -> None:
    """Show each sequence: trigger, state, steps, and its readers by state.

    Reading the files records them: a sequence exists (and enrols readers
    whose trigger comes later) from the first time listkit reads it.

    \b
    Example:
        listkit sequences ls
    """
    loaded = sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    rows = overview(ws.db, loaded)
    if json_:
        emit_json(rows)
    else:
        columns = ("sequence", "trigger", "state", "steps", "enrolled", "active", "finished")
        columns += ("exited", "held_out")
        emit_table(rows, columns, empty="(no sequences in sequences/)")
    if loaded.errors:
        raise SystemExit(1)


@sequences.command("check")
@click.argument("slug")
@pass_workspace
def sequences_check(ws: Workspace, slug: str) -> None:
    """Check a sequence file (trigger, steps, offers) and record it.

    From then on, readers whose trigger happens enter it; readers who joined
    or bought before do not (see `sequences enroll`).

    \b
    Example:
        listkit sequences check welcome
    """
    seq = load_sequence(ws.sequences_dir, ws.offers_dir, slug)
    with immediate(ws.db):
        sync(ws.db, seq)
    click.echo(f"Sequence {slug}: trigger {seq.trigger}, holdout {seq.holdout:.0%}")
    for i, step in enumerate(seq.steps):
        since = "the trigger" if i == 0 else seq.steps[i - 1].name
        sells = ", sells" if step.sells else ""
        click.echo(
            f"  {step.name}: offer {step.offer}, {format_duration(step.after)} after {since}{sells}"
        )
    if seq.exits:
        click.echo(f"  exits on: {', '.join('bought:' + e for e in seq.exits)}")
    click.echo("OK")


@sequences.command("show")
@click.argument("slug")
@json_option
@pass_workspace
def sequences_show(ws: Workspace, slug: str, json_: bool) -> None:
    """Per step: offer, delay, readers waiting for it, and its messages by state.

    Then why messages wait or were skipped: held back for their reader (the
    quiet period after a purchase, the frequency cap) until when; skipped per
    reason.

    \b
    Example:
        listkit sequences show welcome
    """
    rows = step_report(ws.db, slug)
    if json_:
        emit_json(rows)
        return
    why = []
    for row in rows:
        row["messages"] = ", ".join(f"{n} {s}" for s, n in sorted(row["messages"].items()))
        for held in row["held_back"]:
            why.append(
                f"{row['step']}: {held['messages']} held back ({held['reason']}), the last "
                f"until {held['until'][:16]}; `listkit send --due` sends each when it may"
            )
        for reason, n in row["skipped"].items():
            why.append(f"{row['step']}: {n} skipped ({reason})")
        if row["removed"]:
            row["step"] += " (removed)"
    emit_table(rows, ("step", "offer", "after", "sells", "waiting", "messages"))
    for line in why:
        click.echo(line)


@sequences.command("pause")
@click.argument("slug")
@pass_workspace
def sequences_pause(ws: Workspace, slug: str) -> None:
    """Stop sending a sequence; its readers wait, and new ones still enter it.

    \b
    Example:
        listkit sequences pause welcome
    """
    changed = set_paused(ws.db, slug, True)
    click.echo(f"Sequence {slug} {'paused' if changed else 'was already paused'}.")


@sequences.command("resume")
@click.argument("slug")
@pass_workspace
def sequences_resume(ws: Workspace, slug: str) -> None:
    """Send a paused sequence again: what came due meanwhile goes at the next `send --due`.

    \b
    Example:
        listkit sequences resume welcome
    """
    changed = set_paused(ws.db, slug, False)
    click.echo(f"Sequence {slug} {'resumed' if changed else 'was not paused'}.")


@sequences.command("enroll")
@click.argument("slug")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="RULE",
    help="Audience rule, as in a campaign's [where] (repeat to combine).",
)
@click.option("--yes", is_flag=True, help="Enrol without asking (for scripts).")
@pass_workspace
def sequences_enroll(ws: Workspace, slug: str, where: tuple[str, ...], yes: bool) -> None:
    """Enrol existing readers on purpose: the list's members (or the buyers the
    trigger names) not in the sequence yet. Shows the count first.

    \b
    Example:
        listkit sequences enroll welcome --where not_bought=anything --yes
    """
    seq = load_sequence(ws.sequences_dir, ws.offers_dir, slug)
    with immediate(ws.db):
        sid = sync(ws.db, seq)
    rules = rules_from_options(where)
    n = enrol_existing(ws.db, seq, sid, rules, ws.offers_dir, apply=False)
    click.echo(
        f"{n} readers would enter {slug} now (its first step due in "
        f"{format_duration(seq.steps[0].after)})."
    )
    if not n:
        return
    if not yes:
        confirm("Enrol them?", f"listkit sequences enroll {slug} --yes")
    added = enrol_existing(ws.db, seq, sid, rules, ws.offers_dir, apply=True)
    click.echo(f"Enrolled {added} readers in {slug}.")


@sequences.command("retry")
@click.argument("slug")
@click.option("--unknown", "which", flag_value="unknown", help="Unknown rows (check the log).")
@click.option("--failed", "which", flag_value="failed", help="Failed rows (not suppressed ones).")
@click.option("--deferred", "which", flag_value="deferred", help="Deferred rows: due now.")
@pass_workspace
def sequences_retry(ws: Workspace, slug: str, which: str | None) -> None:
    """Queue a sequence's unknown, failed or deferred messages again for `send --due`.

    Use --unknown only after checking the server's log: those messages may
    have been delivered.

    \b
    Example:
        listkit sequences retry welcome --unknown && listkit send --due
    """
    if which is None:
        raise click.UsageError("say which: --unknown, --failed or --deferred")
    n = retry_steps(ws.db, slug, which)
    click.echo(f"{n} {which} messages of {slug} will be sent by the next `listkit send --due`.")
