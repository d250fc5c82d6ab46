"""CLI commands: bounces import, bounces fetch."""

from __future__ import annotations

from collections import Counter

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, json_option
from listkit.inbox.bounces import FetchSummary, Handled, fetch, import_path
from listkit.workspace import Workspace

KIND_TEXT = {
    "dsn": "delivery status report",
    "text_bounce": "bounce",
    "complaint": "complaint",
    "auto_reply": "auto-reply (ignored)",
    "unknown": "not a bounce or complaint (left alone)",
}


@cli.group()
def bounces() -> None:
    """Read bounces and complaints: suppress addresses that bounce or complain.

    \b
    Set LISTKIT_BOUNCE_ADDRESS so that each message's envelope names its
    delivery, then read the mailbox that address delivers to:
        listkit bounces fetch                 # IMAP, LISTKIT_IMAP_URL; from cron
        listkit bounces import ~/Maildir      # a Maildir, mbox, .eml file or folder
    """


def _lines(handled: list[Handled]) -> None:
    for h in handled:
        what = KIND_TEXT.get(h.kind, h.kind)
        fmt = f" ({h.format})" if h.format not in ("none", "rfc3834") else ""
        if not h.outcomes:
            click.echo(f"{h.label}: {what}{fmt}")
            continue
        for o in h.outcomes:
            status = f" {o.status}" if o.status else ""
            if o.matched_by:
                match = f"matched by {o.matched_by} to {o.campaign}"
            elif o.effect == "ignored":
                match = "no effect"
            else:
                match = "no delivery of ours found"
            click.echo(
                f"{h.label}: {what}{fmt}: {o.recipient or '(recipient not given)'}"
                f" {o.outcome}{status}, {match}: {o.effect}"
            )


def _totals(handled: list[Handled]) -> str:
    effects = Counter(o.effect for h in handled for o in h.outcomes)
    kinds = Counter(h.kind for h in handled)
    parts = [f"{len(handled)} message{'' if len(handled) == 1 else 's'}"]
    parts += [f"{n} {KIND_TEXT[k].split(' (')[0]}" for k, n in sorted(kinds.items())]
    done = ", ".join(f"{n} {e}" for e, n in sorted(effects.items()))
    return "; ".join(parts) + (f"; {done}" if done else "")


@bounces.command("import")
@click.argument("path")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
@pass_workspace
def bounces_import(ws: Workspace, path: str, json_: bool, quiet: bool) -> None:
    """Read bounces and complaints from PATH: a .eml file, an mbox file, a Maildir or a
    folder of .eml files (- for one message on stdin). The files are left as they are;
    importing the same messages again changes nothing.

    \b
    Example:
        listkit bounces import ~/Maildir/.Bounces
    """
    handled = import_path(ws, path)
    if json_:
        emit_json([h.as_dict() for h in handled])
        return
    if not quiet:
        _lines(handled)
    click.echo(_totals(handled))


@bounces.command("fetch")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line (for cron).")
@pass_workspace
def bounces_fetch(ws: Workspace, json_: bool, quiet: bool) -> None:
    """Read new messages from the IMAP mailbox in LISTKIT_IMAP_URL, record bounces and
    complaints, then move or delete (LISTKIT_IMAP_DONE) exactly the messages understood.
    Anything else stays in the mailbox, unread. Safe to run as often as you like.

    \b
    Example (cron):
        */15 * * * * cd /home/me/myshop && listkit bounces fetch --quiet
    """
    summary: FetchSummary = fetch(ws)
    if json_:
        emit_json(summary.as_dict())
        return
    if not quiet:
        _lines(summary.handled)
    line = f"{summary.mailbox}: {_totals(summary.handled)}; {summary.removed} removed"
    if summary.finished_earlier:
        line += f" (and {summary.finished_earlier} left by an earlier run)"
    if summary.removal and (summary.removed or summary.finished_earlier):
        line += f": {summary.removal}"
    click.echo(line)
