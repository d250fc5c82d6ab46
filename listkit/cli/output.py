"""How commands print rows: a table for people, JSON or CSV for scripts.

A table uses rich on a terminal and plain aligned text otherwise (no colour
when not a TTY). CSV goes through ``listkit.csvout``: no cell runs as a
spreadsheet formula.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from listkit import csvout
from listkit.errors import ListkitError

# Machine output: one option, one wording, on every command that has it.
JSON_HELP = "Output JSON (for scripts)."
json_option = click.option("--json", "json_", is_flag=True, help=JSON_HELP)


def format_option(formats: Sequence[str]):
    """An importer's ``--format`` (``fmt``): one of ``formats``, ``auto`` by default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(formats),
        default="auto",
        show_default=True,
        help="The file's shape; auto recognises it by its header.",
    )


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """CSV through the one writer that neutralises formulas (see ``listkit.csvout``)."""
    writer = csvout.writer(sys.stdout)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in columns])


def shown_time(stored: str | None) -> str | None:
    """A stored time as every output shows it: ISO 8601 in UTC, to the second
    (``2026-11-02T10:00:00+00:00``), whatever fraction or offset it was stored with."""
    if not stored:
        return stored
    dt = datetime.fromisoformat(stored)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    """A value as tables and CSV show it: spelled as --json spells it (true, false),
    nothing for no value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def emit_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    headers: Sequence[str] | None = None,
    empty: str = "(none)",
) -> None:
    """Print rows as a table: rich on a terminal, aligned plain text otherwise."""
    headers = list(headers or columns)
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*headers, show_edge=False, pad_edge=False)
        for line in cells:
            table.add_row(*(Text(v) for v in line))  # data is never markup
        Console(highlight=False).print(table)
        return
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for line in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def input_name(file) -> str:
    """How to name an input file in messages: its path, or <stdin> for '-'."""
    name = getattr(file, "name", "<stdin>")
    return "<stdin>" if name in ("-", "<stdin>") else str(name)


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def require_terminal(command: str, hint: str = "") -> None:
    """Refuse, naming the command with --yes, when nobody is there to answer a question
    (cron, a pipe): click.confirm would read nothing and print only "Aborted!"."""
    if not stdin_is_terminal():
        raise ListkitError(f"not a terminal, so nobody can confirm: run `{command}`{hint}")


def confirm(question: str, command: str) -> None:
    """Ask ``question`` on a terminal (no: abort); without one, say to run ``command``."""
    require_terminal(command)
    click.confirm(question, abort=True)
