"""Commands about the workspace itself: init and config."""

from __future__ import annotations

from pathlib import Path

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, emit_table, json_option
from listkit.mail import dkim
from listkit.workspace import Workspace, init_workspace


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def init(ctx: click.Context, directory: Path | None) -> None:
    """Create a workspace: .env with a fresh secret, example offer and campaign, database.

    DIRECTORY defaults to the workspace (the current folder). Existing files
    are never overwritten: init refuses and changes nothing.

    \b
    Example:
        listkit init myshop
    """
    ws: Workspace = ctx.obj
    target = directory if directory is not None else ws.root
    created = init_workspace(target)
    click.echo(f"Created workspace {target}:")
    for path in created:
        click.echo(f"  {path.relative_to(target)}")
    click.echo("Next: edit .env (sender, postal address, SMTP), then `listkit lists create SLUG`.")


@cli.command()
@json_option
@pass_workspace
def config(ws: Workspace, json_: bool) -> None:
    """Show the effective settings and where each comes from; secrets are masked.

    \b
    Example:
        listkit config
    """
    rows = ws.settings.effective()
    signing = dkim.status(ws.settings)
    if json_:
        out = {r["name"]: {"value": r["value"], "source": r["source"]} for r in rows}
        emit_json({**out, "dkim": signing})
        return
    click.echo(f"Workspace: {ws.root}")
    emit_table(rows, ["name", "value", "source"], headers=["setting", "value", "from"])
    click.echo(dkim.describe(signing))
