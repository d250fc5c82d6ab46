"""`listkit backup`: a consistent, private, checked copy of the database."""

from __future__ import annotations

from pathlib import Path

import click

from listkit.backup import backup_database
from listkit.cli import cli, pass_workspace
from listkit.workspace import Workspace


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@pass_workspace
def backup(ws: Workspace, dest: Path, force: bool) -> None:
    """Copy the database to DEST while send and serve keep running.

    The copy is one moment of the database, private (mode 0600) and checked
    with SQLite's integrity check before it takes DEST's name. DEST must not
    exist (unless --force); standard output (-) is not supported. Messages a
    running send had in flight are marked in the copy as possibly sent, so a
    restored copy never sends them twice.

    \b
    Example:
        listkit backup backups/listkit-$(date +%F).db
    """
    ws.refuse_own_file(dest, "DEST")
    done = backup_database(ws.db, ws.settings.db_path, dest, force=force)
    click.echo(done.summary())
