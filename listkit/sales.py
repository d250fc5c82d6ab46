"""Sales: importing the shop's exports and saved webhooks, one row per order.

Gumroad sales CSV, Stripe payments CSV and Shopify orders CSV are recognised
by their headers; a generic CSV maps its columns by option; JSON lines hold
saved webhook payloads (Gumroad ping, Stripe ``checkout.session.completed``,
Lemon Squeezy ``order_created`` / ``order_refunded``).

The rules: one sale per (source, order id), so importing twice changes
nothing and a later import updates refunds; amounts are integer minor units
with their currency; rows that are not sales (totals, extra line items, test
purchases, failed payments) are skipped with a reason; a bad row is reported
with its line and field and never stops the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qsl

from sqlite_utils import Database

from listkit.addresses import email_key
from listkit.db import immediate, now
from listkit.errors import InputError
from listkit.money import currency_code, to_minor

FORMATS = ("auto", "gumroad", "stripe", "shopify", "csv", "jsonl")
REVENUE_STATUSES = ("paid", "partially_refunded", "refunded")


@dataclass
class Sale:
    source: str
    order_id: str
    amount: int
    currency: str
    at: str
    status: str = "paid"  # paid | partially_refunded | refunded | pending
    refunded: int = 0
    email: str | None = None
    coupon: str | None = None
    token: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    product: str | None = None
    raw: dict = field(default_factory=dict)


class Skip(Exception):
    """A row that is not a sale; the message is the reason."""


def parse_time(value: str, field_name: str) -> str:
    """Shop timestamps to ISO 8601 UTC; naive times are taken as UTC."""
    text = (value or "").strip()
    if not text:
        raise InputError(f"{field_name} is empty")
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC).isoformat()
    candidate = text.replace("Z", "+00:00").replace(" UTC", "+00:00")
    for attempt in (candidate, candidate.replace(" +", "+").replace(" -", "-")):
        try:
            dt = datetime.fromisoformat(attempt)
            break
        except ValueError:
            continue
    else:
        for fmt in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d %b %Y %H:%M:%S"):
            try:
                dt = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise InputError(f"{field_name} {text!r} is not a date and time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat()


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "t")


def _money(row: dict, column: str, currency: str) -> int:
    value = (row.get(column) or "").strip()
    if not value:
        return 0
    try:
        return to_minor(value, currency)
    except InputError as e:
        raise InputError(f"{column}: {e}") from None


def _optional(row: dict, column: str | None) -> str | None:
    return ((row.get(column) or "").strip() or None) if column else None


def _need(row: dict, column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise InputError(f"{column} is empty")
    return value


# --- Gumroad -------------------------------------------------------------------------------


def gumroad_row(row: dict) -> Sale:
    purchase_id = (row.get("Purchase ID") or "").strip()
    if purchase_id.lower() == "totals" or (
        not purchase_id and (row.get("Item Name") or "").strip().lower() == "totals"
    ):
        raise Skip("totals row")
    if not purchase_id:
        raise InputError("Purchase ID is empty")
    if _flag(row.get("Free trial purchase?")) or _flag(row.get("Pre-order authorization?")):
        raise Skip("not a charge (free trial or pre-order authorization)")
    currency = "USD"  # the ($) columns are in US dollars
    amount = _money(row, "Sale Price ($)", currency)
    partial = _money(row, "Partial Refund ($)", currency)
    fully = _flag(row.get("Fully Refunded?")) or (_flag(row.get("Refunded?")) and not partial)
    refunded = amount if fully else min(partial, amount)
    date = _need(row, "Purchase Date")
    time = (row.get("Purchase Time (UTC timezone)") or "00:00:00").strip()
    return Sale(
        source="gumroad",
        order_id=purchase_id,
        amount=amount,
        currency=currency,
        at=parse_time(date if "T" in date or ":" in date else f"{date} {time}", "Purchase Date"),
        status="refunded" if fully else "partially_refunded" if refunded else "paid",
        refunded=refunded,
        email=(row.get("Purchase Email") or row.get("Buyer Email") or "").strip() or None,
        coupon=(row.get("Discount Code") or "").strip() or None,
        utm_campaign=(row.get("UTM Campaign") or "").strip() or None,
        utm_content=(row.get("UTM Content") or "").strip() or None,
        product=(row.get("Item Name") or "").strip() or None,
        raw=row,
    )


# --- Stripe --------------------------------------------------------------------------------


def stripe_row(row: dict, token_keys: tuple[str, ...]) -> Sale:
    status = (row.get("Status") or "").strip().lower()
    if status in ("failed", "canceled", "blocked"):
        raise Skip(f"{status} payment")
    if (row.get("Captured") or "true").strip().lower() == "false":
        raise Skip("not captured")
    currency = currency_code(_need(row, "Currency"))
    amount = _money(row, "Amount", currency)
    refunded = min(_money(row, "Amount Refunded", currency), amount)
    if status == "refunded" and not refunded:
        refunded = amount  # older exports say Refunded without the amount
    date_column = "Created date (UTC)" if "Created date (UTC)" in row else "Created (UTC)"
    token = next(
        (
            row[f"{k} (metadata)"].strip()
            for k in token_keys
            if (row.get(f"{k} (metadata)") or "").strip()
        ),
        None,
    )
    return Sale(
        source="stripe",
        order_id=_need(row, "id"),
        amount=amount,
        currency=currency,
        at=parse_time(row.get(date_column) or "", date_column),
        status="refunded"
        if refunded >= amount and amount
        else "partially_refunded"
        if refunded
        else "paid",
        refunded=refunded,
        email=(row.get("Customer Email") or "").strip() or None,
        coupon=(row.get("coupon (metadata)") or "").strip() or None,
        token=token,
        utm_campaign=(row.get("utm_campaign (metadata)") or "").strip() or None,
        utm_content=(row.get("utm_content (metadata)") or "").strip() or None,
        product=(row.get("Description") or "").strip() or None,
        raw=row,
    )


# --- Shopify -------------------------------------------------------------------------------

SHOPIFY_STATUS = {
    "paid": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
    "pending": "pending",
    "authorized": "pending",
    "partially_paid": "pending",
}


def shopify_row(row: dict) -> Sale:
    name = _need(row, "Name")
    financial = (row.get("Financial Status") or "").strip().lower()
    if not financial and not (row.get("Total") or "").strip():
        raise Skip(f"line item of order {name}")
    if financial == "voided":
        raise Skip("voided order")
    status = SHOPIFY_STATUS.get(financial)
    if status is None:
        raise InputError(f"Financial Status {financial!r} is not one listkit knows")
    currency = currency_code(_need(row, "Currency"))
    amount = _money(row, "Total", currency)
    refunded = min(_money(row, "Refunded Amount", currency), amount)
    if financial == "refunded":
        refunded = amount
    return Sale(
        source="shopify",
        order_id=name,
        amount=amount,
        currency=currency,
        at=parse_time(row.get("Paid at") or row.get("Created at") or "", "Created at"),
        status=status,
        refunded=refunded,
        email=(row.get("Email") or "").strip() or None,
        coupon=(row.get("Discount Code") or "").strip() or None,
        product=(row.get("Lineitem name") or "").strip() or None,
        raw=row,
    )


# --- Generic CSV ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    order: str = "order"
    email: str = "email"
    amount: str = "amount"
    currency: str | None = "currency"
    fixed_currency: str | None = None
    date: str = "date"
    coupon: str | None = "coupon"
    token: str | None = "token"
    refunded: str | None = "refunded"
    utm_campaign: str | None = "utm_campaign"
    utm_content: str | None = "utm_content"


def generic_row(row: dict, cols: Columns) -> Sale:
    if cols.fixed_currency:
        currency = currency_code(cols.fixed_currency)
    else:
        currency = currency_code(_need(row, cols.currency or "currency"))
    amount = _money(row, cols.amount, currency)
    if not (row.get(cols.amount) or "").strip():
        raise InputError(f"{cols.amount} is empty")
    refunded = min(_money(row, cols.refunded, currency), amount) if cols.refunded else 0
    return Sale(
        source="csv",
        order_id=_need(row, cols.order),
        amount=amount,
        currency=currency,
        at=parse_time(row.get(cols.date) or "", cols.date),
        status="refunded"
        if amount and refunded >= amount
        else "partially_refunded"
        if refunded
        else "paid",
        refunded=refunded,
        email=(row.get(cols.email) or "").strip() or None,
        coupon=((row.get(cols.coupon) or "").strip() or None) if cols.coupon else None,
        token=((row.get(cols.token) or "").strip() or None) if cols.token else None,
        utm_campaign=_optional(row, cols.utm_campaign),
        utm_content=_optional(row, cols.utm_content),
        raw=row,
    )


# --- Webhook payloads (JSON lines) -----------------------------------------------------------


def _gumroad_ping(data: dict, token_param: str) -> Sale:
    if _flag(str(data.get("test", ""))):
        raise Skip("test purchase")
    params: dict[str, str] = {}
    for key, value in data.items():
        k = key.replace("%5B", "[").replace("%5D", "]")
        if k.startswith("url_params[") and k.endswith("]"):
            params[k[len("url_params[") : -1]] = value
    if isinstance(data.get("url_params"), dict):
        params.update(data["url_params"])
    currency = currency_code(str(data.get("currency") or "usd"))
    try:
        amount = int(str(data.get("price", "")).strip())
    except ValueError:
        raise InputError(f"price {data.get('price')!r} is not whole cents") from None
    refunded = _flag(str(data.get("refunded", "")))
    return Sale(
        source="gumroad",
        order_id=str(data.get("sale_id") or "").strip() or _missing("sale_id"),
        amount=amount,
        currency=currency,
        at=parse_time(str(data.get("sale_timestamp") or ""), "sale_timestamp"),
        status="refunded" if refunded else "paid",
        refunded=amount if refunded else 0,
        email=str(data.get("email") or "").strip() or None,
        coupon=str(data.get("offer_code") or "").strip() or None,
        token=params.get(token_param) or None,
        utm_campaign=params.get("utm_campaign") or None,
        utm_content=params.get("utm_content") or None,
        product=str(data.get("product_name") or data.get("product_id") or "") or None,
        raw=data,
    )


def _missing(name: str) -> str:
    raise InputError(f"{name} is missing")


def _stripe_event(event: dict, token_param: str) -> Sale:
    if event.get("type") != "checkout.session.completed":
        raise Skip(f"Stripe event {event.get('type')!r} is not a completed checkout")
    if event.get("livemode") is False:
        raise Skip("test mode event")
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("payment_status") not in ("paid", "no_payment_required"):
        raise Skip(f"payment_status {obj.get('payment_status')!r}")
    currency = currency_code(str(obj.get("currency") or ""))
    amount = obj.get("amount_total")
    if not isinstance(amount, int):
        raise InputError(f"amount_total {amount!r} is not whole minor units")
    metadata = obj.get("metadata") or {}
    created = obj.get("created") or event.get("created")
    return Sale(
        source="stripe",
        order_id=str(obj.get("payment_intent") or obj.get("id") or "") or _missing("id"),
        amount=amount,
        currency=currency,
        at=parse_time(str(created or ""), "created"),
        email=((obj.get("customer_details") or {}).get("email") or obj.get("customer_email")),
        coupon=metadata.get("coupon"),
        token=obj.get("client_reference_id") or metadata.get(token_param),
        utm_campaign=metadata.get("utm_campaign"),
        utm_content=metadata.get("utm_content"),
        raw=event,
    )


def _lemon_squeezy(payload: dict, token_param: str) -> Sale:
    meta = payload.get("meta") or {}
    event = meta.get("event_name")
    if event not in ("order_created", "order_refunded"):
        raise Skip(f"Lemon Squeezy event {event!r} is not an order")
    if meta.get("test_mode") is True:
        raise Skip("test mode order")
    attrs = (payload.get("data") or {}).get("attributes") or {}
    custom = meta.get("custom_data") or {}
    currency = currency_code(str(attrs.get("currency") or ""))
    total = attrs.get("total")
    if not isinstance(total, int):
        raise InputError(f"total {total!r} is not whole cents")
    status = str(attrs.get("status") or "paid")
    if status == "failed":
        raise Skip("failed payment")
    refunded = total if attrs.get("refunded") or status == "refunded" else 0
    if status == "partial_refund":
        refunded = int(attrs.get("refunded_amount") or 0)
    return Sale(
        source="lemonsqueezy",
        order_id=str(attrs.get("order_number") or (payload.get("data") or {}).get("id") or "")
        or _missing("order_number"),
        amount=total,
        currency=currency,
        at=parse_time(str(attrs.get("created_at") or ""), "created_at"),
        status="refunded"
        if refunded >= total and total
        else "partially_refunded"
        if refunded
        else "paid",
        refunded=refunded,
        email=attrs.get("user_email"),
        coupon=custom.get("coupon"),
        token=custom.get(token_param),
        utm_campaign=custom.get("utm_campaign"),
        utm_content=custom.get("utm_content"),
        product=(attrs.get("first_order_item") or {}).get("product_name"),
        raw=payload,
    )


def webhook_sale(line: str, token_param: str) -> Sale:
    text = line.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    else:
        data = dict(parse_qsl(text, keep_blank_values=True))  # a raw form-encoded ping
    if not isinstance(data, dict):
        raise InputError("not a JSON object")
    if data.get("object") == "event" or ("type" in data and "data" in data):
        return _stripe_event(data, token_param)
    if "meta" in data and "data" in data:
        return _lemon_squeezy(data, token_param)
    if "sale_id" in data:
        return _gumroad_ping(data, token_param)
    raise InputError("not a Gumroad ping, Stripe event or Lemon Squeezy order")


# --- Import ----------------------------------------------------------------------------------


def detect(header: list[str]) -> str:
    cols = set(header)
    if {"Purchase ID", "Sale Price ($)"} <= cols:
        return "gumroad"
    if "id" in cols and "Amount" in cols and "Status" in cols and "Currency" in cols:
        return "stripe"
    if {"Name", "Financial Status", "Total"} <= cols:
        return "shopify"
    return "csv"


@dataclass
class SalesSummary:
    file: str
    format: str = ""
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)
    attributed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _csv_records(text: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    reader = csv.reader(text)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise InputError("the file is empty: expected a header row and sales") from None

    def rows() -> Iterator[tuple[int, dict]]:
        line = reader.line_num
        for values in reader:
            start, line = line + 1, reader.line_num
            if not any(v.strip() for v in values):
                continue
            yield start, dict(zip(header, values, strict=False))

    return header, rows()


def _jsonl_records(text: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text, 1):
        if line.strip():
            yield number, line


def parse_file(
    stream: IO[bytes],
    *,
    fmt: str = "auto",
    columns: Columns | None = None,
    token_param: str = "lk",
) -> tuple[str, Iterator[tuple[int, Sale | Skip | InputError]]]:
    """(format, (line, Sale or Skip or error) for each record)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    # Sales exports are small enough to read whole, which also makes a wrong
    # encoding an error up front rather than halfway through.
    data = stream.read()
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"line {line} is not UTF-8 text: save the export as UTF-8 (CSV UTF-8)"
        ) from None
    if not content.strip():
        raise InputError("the file is empty: expected a header row and sales")
    text = io.StringIO(content, newline="")
    if fmt == "auto" and content.lstrip()[:1] == "{":
        fmt = "jsonl"
    if fmt == "jsonl":
        return "jsonl", _results(
            (
                (n, lambda line=line: webhook_sale(line, token_param))
                for n, line in _jsonl_records(text)
            )
        )
    header, rows = _csv_records(text)
    if fmt == "auto":
        fmt = detect(header)
    if fmt == "csv":
        cols = columns or Columns()
        needed = [cols.order, cols.amount, cols.date] + (
            [] if cols.fixed_currency else [cols.currency]
        )
        missing = [c for c in needed if c not in header]
        if missing:
            raise InputError(
                f"the header lacks {', '.join(repr(c) for c in missing)} (columns: "
                f"{', '.join(header)}); map them with --order-column, --amount-column, "
                "--currency-column (or --currency), --date-column"
            )
        parse = lambda row: generic_row(row, cols)  # noqa: E731
    elif fmt == "gumroad":
        parse = gumroad_row
    elif fmt == "stripe":
        keys = (token_param, "client_reference_id", "token")
        parse = lambda row: stripe_row(row, keys)  # noqa: E731
    else:
        parse = shopify_row
    return fmt, _results(((n, lambda row=row: parse(row)) for n, row in rows))


def _results(items: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Sale | Skip | InputError]]:
    for number, make in items:
        try:
            yield number, make()
        except (Skip, InputError) as e:
            yield number, e


def store(
    db: Database, sales: Iterable[tuple[int, Sale | Skip | InputError]], summary: SalesSummary
) -> list[int]:
    """Insert or update sales (one transaction); return the ids that changed."""
    changed: list[int] = []
    stamp = now()
    with immediate(db):
        for line, item in sales:
            if isinstance(item, Skip):
                reason = str(item)
                key = "line item" if reason.startswith("line item") else reason
                summary.skipped[key] = summary.skipped.get(key, 0) + 1
                continue
            if isinstance(item, InputError):
                summary.rejected += 1
                summary.errors.append({"line": line, "reason": str(item)})
                continue
            sale = item
            row = db.execute(
                """SELECT id, status, amount, refunded, currency FROM sales
                   WHERE source = ? AND order_id = ?""",
                [sale.source, sale.order_id],
            ).fetchone()
            values = [
                sale.status,
                sale.amount,
                sale.refunded,
                sale.currency,
                sale.at,
                sale.email,
                email_key(sale.email) if sale.email else None,
                sale.coupon,
                sale.token,
                sale.utm_campaign,
                sale.utm_content,
                sale.product,
                json.dumps(sale.raw, ensure_ascii=False, default=str),
            ]
            if row is None:
                sale_id = db.execute(
                    """INSERT INTO sales (status, amount, refunded, currency, at, email, email_key,
                       coupon, token, utm_campaign, utm_content, product, raw, source, order_id,
                       imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [*values, sale.source, sale.order_id, stamp],
                ).lastrowid
                summary.imported += 1
                changed.append(sale_id)
            elif tuple(row[1:]) != (sale.status, sale.amount, sale.refunded, sale.currency):
                db.execute(
                    """UPDATE sales SET status = ?, amount = ?, refunded = ?, currency = ?, at = ?,
                       email = ?, email_key = ?, coupon = coalesce(?, coupon),
                       token = coalesce(?, token), utm_campaign = coalesce(?, utm_campaign),
                       utm_content = coalesce(?, utm_content), product = coalesce(?, product),
                       raw = ?, updated = ? WHERE id = ?""",
                    [*values, stamp, row[0]],
                )
                summary.updated += 1
                changed.append(row[0])
            else:
                summary.unchanged += 1
    return changed


def add_sale(db: Database, sale: Sale) -> tuple[str, int]:
    summary = SalesSummary(file="manual")
    changed = store(db, [(0, sale)], summary)
    result = "added" if summary.imported else "updated" if summary.updated else "unchanged"
    sale_id = (
        changed[0]
        if changed
        else db.execute(
            "SELECT id FROM sales WHERE source = ? AND order_id = ?", [sale.source, sale.order_id]
        ).fetchone()[0]
    )
    return result, sale_id


def list_sales(db: Database, limit: int | None = None) -> list[dict]:
    cursor = db.execute(
        f"""SELECT s.source, s.order_id, s.at, s.email, s.currency, s.amount, s.refunded,
                   s.status, s.coupon, s.method, c.slug, l.slug, s.offer
            FROM sales s LEFT JOIN campaigns c ON c.id = s.campaign_id
            LEFT JOIN lists l ON l.id = s.list_id ORDER BY s.at, s.id
            {"LIMIT " + str(int(limit)) if limit else ""}"""
    )
    keys = ("source", "order", "at", "email", "currency", "amount", "refunded", "status")
    keys += ("coupon", "method", "campaign", "list", "offer")
    return [dict(zip(keys, row, strict=True)) for row in cursor]
