"""The ``listkit`` command line: a thin layer over the library.

Commands parse options, call one library function and format its result. No
SQL here. Every ``ListkitError`` becomes ``Error: <message>`` with exit 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from listkit import __version__
from listkit.errors import ListkitError
from listkit.workspace import Workspace

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ListkitGroup(click.Group):
    """A group that turns domain errors into clean CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ListkitError as e:
            raise click.ClickException(str(e)) from e


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


def _register() -> None:
    # Imported here so that each command module can import `cli` and
    # `pass_workspace` from this one.
    from listkit.cli import (  # noqa: F401
        lists,
        offers,
        sales,
        send,
        subscribers,
        workspace,
    )


_register()
