"""CLI command: report (which lists, offers and campaigns make money).

Kept apart from the sales commands so that `listkit report` from a script
does not import the importers (and the address validator they need).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.insights import (
    INSIGHTS,
    insight_sections,
    report_data,
    show_insight,
    show_offer_verdicts,
)
from listkit.cli.output import emit_csv, emit_json, emit_table, json_option
from listkit.errors import InputError
from listkit.files import write_private
from listkit.sales.money import format_amounts
from listkit.sales.report_html import render_html
from listkit.sales.reports import (
    BY,
    MAILED_THROUGH_NOTE,
    complaint_warning_text,
    lift_text,
    mailed_through_text,
    skipped_for_reader_text,
)
from listkit.workspace import Workspace


@cli.command()
@click.option(
    "--by",
    type=click.Choice((*BY, *INSIGHTS)),
    default="list",
    show_default=True,
    help="Group by list, offer or campaign; sequence (each step); variant (offer tests), "
    "source, signup-month; "
    "silent (subscribers mailed LISTKIT_SILENT_AFTER+ times with no purchase, no click).",
)
@click.option("--since", help="First day, YYYY-MM-DD.")
@click.option("--until", help="Last day, YYYY-MM-DD.")
@json_option
@click.option("--csv", "csv_", is_flag=True, help="Output CSV.")
@click.option(
    "--html", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML report here."
)
@pass_workspace
def report(
    ws: Workspace, by: str, since, until, json_: bool, csv_: bool, html: Path | None
) -> None:
    """Which lists, offers and campaigns produce revenue, and which produce nothing.

    With --json and --csv, money is in minor units (cents) with its currency
    (--csv: one row per currency).

    \b
    Examples:
        listkit report
        listkit report --by campaign --since 2026-11-01 --json
        listkit report --html report.html
        listkit report --by variant
        listkit report --by sequence
        listkit report --by silent --csv > silent.csv
    """
    if sum(map(bool, (json_, csv_, html))) > 1:
        raise click.UsageError("use one of --json, --csv and --html")
    if by in INSIGHTS and html is None:
        show_insight(ws, by, since, until, json_=json_, csv_=csv_)
        return
    data = report_data(ws, by, since, until, page=html is not None)
    if html is not None:
        _write_page(ws, html, data)
    elif json_:
        emit_json(data["report"])
    elif csv_:
        _emit_csv(data["report"])
    else:
        _print_table(data["report"])
        _print_notes(data["report"])
        show_offer_verdicts(data["report"]["offer_tests"])
        sys.stdout.flush()


# The columns of the table and the CSV, after the grouping's own.
COUNTS = ["audience", "sent", "failed", "unsubscribed", "bounced"]
# The table's columns after the grouping's own, with their headers.
TABLE = (
    *zip(COUNTS, ["audience", "sent", "failed", "unsub", "bounced"], strict=True),
    ("bounce_pct", "bounce %"),
    ("complaints", "compl"),
    ("complaint_pct", "compl %"),
    ("orders", "orders"),
    ("revenue", "revenue"),
    ("conv", "conv"),
    ("per_1000", "per 1k sent"),
    ("clicks", "clicks"),
    ("click_pct", "buy/click"),
    ("methods", "attributed by"),
)


def _write_page(ws: Workspace, html: Path, data: dict) -> None:
    """The HTML report, written private; neither over the database nor over .env."""
    ws.refuse_own_file(html, "--html")
    extra = insight_sections(data["insights"])
    try:
        page = render_html(
            data["report"], data["by_list"], data["by_offer"], data["by_campaign"], extra=extra
        )
        write_private(html, page)
    except OSError as e:
        raise InputError(f"--html {html}: cannot be written ({e.strerror})") from None
    click.echo(f"Wrote {html}.")


def _emit_csv(data: dict) -> None:
    """One line per row and currency; money in minor units."""
    by = data["by"]
    flat = []
    for r in data["rows"]:
        for cur in sorted(r["revenue"]) or [""]:
            flat.append(
                {
                    **r,
                    "currency": cur,
                    "revenue": r["revenue"].get(cur, 0),
                    "revenue_per_1000": r["revenue_per_1000"].get(cur, ""),
                    "methods": " ".join(f"{m}={n}" for m, n in sorted(r["methods"].items())),
                    "mailed": _mailed_cell(r),
                }
            )
    emit_csv(
        flat,
        [
            by,
            *COUNTS,
            "orders",
            "currency",
            "revenue",
            "conversion_rate",
            "revenue_per_1000",
            "complaints",
            "bounce_rate",
            "complaint_rate",
            "clicks",
            "click_to_buy",
            "methods",
            *(["mailed"] if by == "list" else []),
        ],
    )


def _print_table(data: dict) -> None:
    """The rows for people: money formatted, rates as percentages."""
    by = data["by"]
    rows = [
        {
            **r,
            "revenue": format_amounts(r["revenue"], "-"),
            "conv": f"{r['conversion_rate']:.2%}" if r["conversion_rate"] is not None else "-",
            "bounce_pct": _pct(r["bounce_rate"]),
            "complaint_pct": _pct(r["complaint_rate"]),
            "per_1000": format_amounts(r["revenue_per_1000"], "-"),
            "click_pct": _pct(r["click_to_buy"]),
            "methods": ", ".join(f"{m} {n}" for m, n in sorted(r["methods"].items())) or "-",
        }
        for r in data["rows"]
    ]
    emit_table(
        rows,
        [by, *(column for column, _header in TABLE)],
        headers=[by, *(header for _column, header in TABLE)],
        empty="Nothing to report yet.",
    )


def _print_notes(data: dict) -> None:
    """Under the table: the totals, the lists that earned nothing, lift, warnings."""
    t = data["totals"]
    total = format_amounts(t["revenue"], "none")
    un = format_amounts(t["unattributed"]["revenue"])
    click.echo(f"\nTotal: {t['orders']} orders, {total}" + (f" ({un} unattributed)" if un else ""))
    if data["lists_without_revenue"]:
        names = ", ".join(
            f"{x['list']} ({x['active']} active" + (f", {x['sent']} sent)" if "sent" in x else ")")
            for x in data["lists_without_revenue"]
        )
        click.echo(f"Lists mailed that earned nothing: {names}")
    if data["lists_not_mailed"]:
        names = ", ".join(f"{x['list']} ({x['active']} active)" for x in data["lists_not_mailed"])
        click.echo(f"Lists not mailed: {names}")
    if data["lists_mailed_through_others"]:
        names = ", ".join(mailed_through_text(x) for x in data["lists_mailed_through_others"])
        click.echo(f"Lists mailed through other lists ({MAILED_THROUGH_NOTE}): {names}")
    for h in data["holdout"]:
        click.echo(lift_text(h["campaign"], h))
    for w in data["complaint_warnings"]:
        click.echo(f"Warning: {complaint_warning_text(w)}")
    if data.get("skipped_for_reader"):
        click.echo(
            "Skipped for the reader (LISTKIT_QUIET_AFTER_PURCHASE, LISTKIT_FREQUENCY): "
            + skipped_for_reader_text(data["skipped_for_reader"])
        )


def _mailed_cell(row: dict) -> str:
    """The CSV's ``mailed``: yes, no, empty for "(no list)", or the lists its readers were
    mailed through (``through blog+shop``) when no message went through this one."""
    if row.get("mailed_through"):
        return "through " + "+".join(row["mailed_through"])
    return {True: "yes", False: "no"}.get(row.get("mailed"), "")


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"
