"""CLI commands: sales import, add, ls, attribute."""

from __future__ import annotations

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import (
    emit_csv,
    emit_json,
    emit_table,
    format_option,
    input_name,
    json_option,
    shown_time,
)
from listkit.db import now
from listkit.errors import InputError
from listkit.sales.attribution import attribute_all
from listkit.sales.money import currency_code, format_minor, to_minor
from listkit.sales.sales import (
    FORMATS,
    Columns,
    Sale,
    SalesSummary,
    add_sale,
    list_sales,
    parse_file,
    store,
)
from listkit.times import parse_time
from listkit.workspace import Workspace


@cli.group()
def sales() -> None:
    """Record sales from your shop and attribute them to the messages that earned them."""


@sales.command("import")
@click.argument("file", type=click.File("rb"))
@format_option(FORMATS)
@click.option("--order-column", default="order", show_default=True, help="Generic CSV.")
@click.option("--email-column", default="email", show_default=True, help="Generic CSV.")
@click.option("--amount-column", default="amount", show_default=True, help="Generic CSV.")
@click.option("--currency-column", default="currency", show_default=True, help="Generic CSV.")
@click.option("--currency", "fixed_currency", help="Generic CSV: one currency for every row.")
@click.option("--date-column", default="date", show_default=True, help="Generic CSV.")
@click.option("--coupon-column", default="coupon", show_default=True, help="Generic CSV.")
@click.option("--token-column", default="token", show_default=True, help="Generic CSV.")
@click.option("--refunded-column", default="refunded", show_default=True, help="Generic CSV.")
@click.option(
    "--utm-campaign-column", default="utm_campaign", show_default=True, help="Generic CSV."
)
@click.option("--utm-content-column", default="utm_content", show_default=True, help="Generic CSV.")
@click.option(
    "--decimal-comma",
    is_flag=True,
    help="Generic CSV: ',' is the decimal point and '.' groups thousands (1.234,50).",
)
@json_option
@pass_workspace
def sales_import(
    ws: Workspace, file, fmt: str, json_: bool, fixed_currency, decimal_comma: bool, **columns
) -> None:
    """Import sales from FILE (or -): Gumroad, Stripe or Shopify CSV, CSV, or JSON lines.

    JSON lines hold saved webhook payloads: Gumroad pings (JSON or raw form
    bodies), Stripe checkout and charge.refunded events, Lemon Squeezy orders.
    Importing again
    changes nothing; a later export updates refunds. Attribution runs after.

    \b
    Examples:
        listkit sales import gumroad_sales.csv
        listkit sales import webhooks.jsonl
        listkit sales import orders.csv --format csv --order-column "Order #" --currency EUR
    """
    name = input_name(file)
    cols = Columns(
        order=columns["order_column"],
        email=columns["email_column"],
        amount=columns["amount_column"],
        currency=columns["currency_column"],
        fixed_currency=fixed_currency,
        date=columns["date_column"],
        coupon=columns["coupon_column"],
        token=columns["token_column"],
        refunded=columns["refunded_column"],
        utm_campaign=columns["utm_campaign_column"],
        utm_content=columns["utm_content_column"],
        decimal_comma=decimal_comma,
    )
    token_param = ws.settings.token_param
    try:
        detected, records = parse_file(file, fmt=fmt, columns=cols, token_param=token_param)
    except InputError as e:
        raise InputError(f"{name}: {e}") from None
    summary = SalesSummary(file=name, format=detected)
    changed = store(ws.db, records, summary)
    summary.attributed = attribute_all(ws.db, ws.settings.secret_key(), changed)
    if json_:
        emit_json(summary.as_dict())
        return
    s = summary
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(s.skipped.items()))
    click.echo(
        f"{s.file} ({s.format}): {s.imported} imported, {s.updated} updated, "
        f"{s.unchanged} unchanged, {sum(s.skipped.values())} skipped"
        + (f" ({skipped})" if skipped else "")
        + f", {s.rejected} rejected"
    )
    if s.attributed:
        click.echo("attributed: " + ", ".join(f"{n} by {m}" for m, n in s.attributed.items()))
    for err in s.errors:
        click.echo(f"  {s.file}, line {err['line']}: {err['reason']}", err=True)


@sales.command("add")
@click.option("--order", required=True, help="The order id in your shop.")
@click.option("--email", required=True, help="The buyer's address.")
@click.option("--amount", required=True, help="The amount paid, e.g. 29.00.")
@click.option("--currency", required=True, help="3-letter code, e.g. USD.")
@click.option("--at", "at", help="When (ISO 8601; default now).")
@click.option("--coupon", help="The coupon code used.")
@click.option("--token", help="The delivery token the buyer's link carried.")
@click.option("--product", help="What was sold.")
@pass_workspace
def sales_add(ws: Workspace, order, email, amount, currency, at, coupon, token, product) -> None:
    """Record a sale made elsewhere (source 'manual').

    \b
    Example:
        listkit sales add --order 1001 --email ann@example.com --amount 29.00 --currency USD
    """
    try:
        code = currency_code(currency)
    except InputError as e:
        raise InputError(f"--currency: {e}") from None
    try:
        minor = to_minor(amount, code)
    except InputError as e:
        raise InputError(f"--amount: {e}") from None
    if minor < 0:
        raise InputError(f"--amount: {amount!r} is negative")
    sale = Sale(
        source="manual",
        order_id=order,
        amount=minor,
        currency=code,
        at=parse_time(at, "--at") if at else now(),
        email=email.strip(),
        coupon=coupon,
        token=token,
        product=product,
    )
    result, sale_id = add_sale(ws.db, sale)
    method = attribute_all(ws.db, ws.settings.secret_key(), [sale_id])
    how = next(iter(method), "none")
    click.echo(f"Sale {order} {result}: {format_minor(sale.amount, code)}, attributed by {how}.")


@sales.command("ls")
@json_option
@click.option("--csv", "csv_", is_flag=True, help="Output CSV.")
@pass_workspace
def sales_ls(ws: Workspace, json_: bool, csv_: bool) -> None:
    """Show recorded sales with their attribution.

    Times are ISO 8601 in UTC, to the second, in the table, CSV and JSON alike.

    \b
    Example:
        listkit sales ls --json
    """
    rows = [r | {"at": shown_time(r["at"])} for r in list_sales(ws.db)]
    columns = ["source", "order", "at", "email", "currency", "amount", "refunded", "status"]
    columns += ["coupon", "method", "campaign", "list"]
    if json_:
        emit_json(rows)
    elif csv_:
        emit_csv(rows, columns)
    else:
        for r in rows:
            r["paid"] = format_minor(r["amount"] - r["refunded"], r["currency"])
        emit_table(
            rows,
            ["source", "order", "at", "email", "paid", "status", "method", "campaign", "list"],
            empty="No sales yet: `listkit sales import FILE`.",
        )


@sales.command("attribute")
@pass_workspace
def sales_attribute(ws: Workspace) -> None:
    """Recompute the attribution of every sale (deterministic).

    \b
    Example:
        listkit sales attribute
    """
    counts = attribute_all(ws.db, ws.settings.secret_key())
    total = sum(counts.values())
    click.echo(f"{total} sales: " + (", ".join(f"{n} by {m}" for m, n in counts.items()) or "none"))
