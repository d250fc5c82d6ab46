"""The ``listkit`` command line: a thin layer over the library.

Commands parse options, call one library function and format its result. No
SQL here. Every ``ListkitError`` becomes ``Error: <message>`` with exit 1.
"""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import click

from listkit import __version__
from listkit.config import Settings
from listkit.db import DISK_ERRNOS, describe_db_error, describe_os_error
from listkit.errors import ListkitError
from listkit.workspace import Workspace

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Which module defines each command: a command's module (and the libraries it
# needs: Jinja, aiosmtplib, ...) is imported only when that command runs, so
# that `listkit report` from a script does not pay for the sender.
COMMAND_MODULES = {
    "init": "workspace",
    "config": "workspace",
    "lists": "lists",
    "subscribers": "subscribers",
    "unsubscribe": "subscribers",
    "suppress": "subscribers",
    "offers": "offers",
    "campaigns": "send",
    "send": "send",
    "status": "send",
    "retry": "send",
    "sink": "send",
    "sales": "sales",
    "report": "report",
    "serve": "serve",
    "dkim": "dkim",
    "doctor": "doctor",
    "bounces": "bounces",
    "form": "serve",
    "backup": "backup",
    "sequences": "sequences",
}


class ListkitGroup(click.Group):
    """The root group: loads command modules on demand, turns domain errors into clean
    CLI errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"listkit.cli.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ListkitError as e:
            raise click.ClickException(str(e)) from e
        except sqlite3.OperationalError as e:
            # Locked past the busy timeout, or the disk full, in any command:
            # the transaction rolled back; say which database and what to do.
            raise click.ClickException(describe_db_error(_db_path(ctx), e)) from e
        except OSError as e:
            if e.errno not in DISK_ERRNOS:
                raise
            raise click.ClickException(describe_os_error(e)) from e


@click.group(cls=ListkitGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="listkit")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default="current folder",
    envvar="LISTKIT_WORKSPACE",
    help="Workspace folder: .env, offers/, campaigns/ and the database.",
)
@click.pass_context
def cli(ctx: click.Context, workspace: Path) -> None:
    """Send sales offers to email lists and see which lists make money.

    \b
    Start with:
        listkit init myshop && cd myshop
        listkit lists create blog --title "Blog readers"
        listkit subscribers import export.csv --list blog
        listkit campaigns check launch
        listkit send launch
        listkit report --by list
    """
    ws = Workspace(workspace.resolve() if workspace.exists() else workspace.absolute())
    ctx.obj = ws
    ctx.call_on_close(ws.close)


pass_workspace = click.make_pass_decorator(Workspace)


def _db_path(ctx: click.Context) -> Path | str:
    ws = ctx.obj if isinstance(ctx.obj, Workspace) else None
    try:
        return ws.settings.db_path if ws is not None else "(unknown)"
    except ListkitError:
        return ws.root / Settings.db.default
