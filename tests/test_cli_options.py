"""Every command's options, walked as click sees them: each has help, and the one
that prints JSON for scripts is the same everywhere."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from listkit.cli import cli
from listkit.cli.output import JSON_HELP


def commands() -> Iterator[tuple[str, click.Command]]:
    """(``listkit sub command``, command) for the root and every command below it."""
    ctx = click.Context(cli, info_name="listkit")
    todo = [("listkit", cli)]
    while todo:
        path, command = todo.pop()
        yield path, command
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                todo.append((f"{path} {name}", command.get_command(ctx, name)))


def options() -> list[tuple[str, click.Option]]:
    return [
        (f"{path} {'/'.join(p.opts)}", p)
        for path, command in commands()
        for p in command.params
        if isinstance(p, click.Option)
    ]


def test_the_walk_finds_the_commands_loaded_on_demand():
    found = {path for path, _c in commands()}
    assert {"listkit send", "listkit sales import", "listkit bounces fetch"} <= found


@pytest.mark.parametrize("where, option", options(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_says_what_it_does(where, option):
    assert option.help, f"{where} has no help"


@pytest.mark.parametrize("where, option", options(), ids=lambda v: v if isinstance(v, str) else "")
def test_an_option_that_prints_json_is_json_everywhere(where, option):
    if "json" in (option.name or "") or any("json" in o for o in option.opts):
        assert (option.opts, option.name, option.is_flag) == (["--json"], "json_", True), where
        assert option.help == JSON_HELP, where
