"""CLI commands: lists."""

from __future__ import annotations

import click

from listkit.audience.lists import create_list, list_lists, remove_list
from listkit.cli import cli, pass_workspace
from listkit.cli.output import confirm, emit_json, emit_table, json_option
from listkit.sales.stats import prune_silent, silent_members
from listkit.workspace import Workspace


@cli.group()
def lists() -> None:
    """Create, show and remove subscriber lists."""


@lists.command("create")
@click.argument("slug")
@click.option("--title", help="A human title, e.g. 'Blog readers'.")
@pass_workspace
def lists_create(ws: Workspace, slug: str, title: str | None) -> None:
    """Create a list named SLUG (lower-case letters, digits, - and _).

    \b
    Example:
        listkit lists create blog --title "Blog readers"
    """
    create_list(ws.db, slug, title)
    click.echo(f"Created list {slug}.")


@lists.command("ls")
@json_option
@pass_workspace
def lists_ls(ws: Workspace, json_: bool) -> None:
    """Show every list with its active, suppressed, unsubscribed and bounced counts.

    Active members are those a campaign can mail; suppressed ones are members
    whose address is suppressed (a hard bounce, a complaint, "unsubscribe from
    everything"): never mailed again, whatever their list says.

    \b
    Example:
        listkit lists ls --json
    """
    rows = list_lists(ws.db)
    if json_:
        emit_json(rows)
        return
    emit_table(
        rows,
        ["slug", "title", "active", "suppressed", "unsubscribed", "bounced"],
        headers=["list", "title", "active", "suppressed", "unsubscribed", "bounced"],
        empty="No lists yet: create one with `listkit lists create SLUG`.",
    )


@lists.command("rm")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_workspace
def lists_rm(ws: Workspace, slug: str, yes: bool) -> None:
    """Remove a list and its memberships; subscribers and suppressions stay.

    \b
    Example:
        listkit lists rm old-list --yes
    """
    if not yes:
        confirm(f"Remove list {slug!r} and all its memberships?", f"listkit lists rm {slug} --yes")
    removed = remove_list(ws.db, slug)
    click.echo(f"Removed list {slug} ({removed} memberships).")


@lists.command("prune")
@click.argument("slug")
@click.option(
    "--silent",
    is_flag=True,
    help="Members mailed LISTKIT_SILENT_AFTER or more times with no purchase and no click.",
)
@click.option("--dry-run", is_flag=True, help="Show who would be moved out; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_workspace
def lists_prune(ws: Workspace, slug: str, silent: bool, dry_run: bool, yes: bool) -> None:
    """Move the silent members of a list out (status pruned, with the reason).

    Their subscriber record, deliveries, sales and other lists stay; they are
    no longer mailed through this list.

    \b
    Examples:
        listkit lists prune blog --silent --dry-run
        listkit lists prune blog --silent --yes
    """
    if not silent:
        raise click.UsageError("say what to prune: --silent")
    threshold = ws.settings.silent_after
    members = silent_members(ws.db, slug, threshold)
    what = f"mailed {threshold}+ times with no purchase and no click"
    if dry_run or not members:
        for m in members:
            click.echo(f"  {m['email']} ({m['sent']} sent)")
        verb = "would be" if members else "are"
        click.echo(f"{len(members)} members of {slug} {verb} pruned ({what}); nothing changed.")
        return
    if not yes:
        confirm(
            f"Move {len(members)} members of {slug} out ({what})? Their history stays.",
            f"listkit lists prune {slug} --silent --yes",
        )
    n = prune_silent(ws.db, slug, threshold)
    click.echo(f"Pruned {n} members of {slug} ({what}); their history stays.")
