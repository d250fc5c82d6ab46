"""Sales: importing the shop's exports and saved webhooks, one row per order.

Gumroad sales CSV, Stripe payments CSV and Shopify orders CSV are recognised
by their headers; a generic CSV maps its columns by option; JSON lines hold
saved webhook payloads (Gumroad ping, Stripe ``checkout.session.completed`` /
``async_payment_succeeded`` / ``charge.refunded``, Lemon Squeezy
``order_created`` / ``order_refunded``); ``listkit serve``'s webhooks hand
their verified payloads to the same ``record_sale`` and ``store_records``.

The rules: one sale per (source, order id), so importing twice changes
nothing and a later import updates refunds; amounts are integer minor units
with their currency; rows that are not sales (totals, extra line items, test
purchases, failed payments) are skipped with a reason; a bad row is reported
with its line and field and never stops the others (``parse_one`` turns
anything a record raises into a rejection); refunds only grow.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qsl

from sqlite_utils import Database

from listkit import csvin
from listkit.addresses import email_key
from listkit.audience.enrollments import on_sales
from listkit.config import Settings
from listkit.db import immediate, now
from listkit.errors import InputError, ListkitError, quoted
from listkit.payloads import loads_object
from listkit.sales.money import currency_code, from_stripe_minor, to_minor, whole_minor
from listkit.times import parse_time

FORMATS = ("auto", "gumroad", "stripe", "shopify", "csv", "jsonl")


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
    # Other ids of the same order at the same source (a Stripe charge or checkout
    # session beside its payment intent): an import finds the order by any of them.
    aliases: tuple[str, ...] = ()


class Skip(Exception):
    """A row that is not a sale; the message is the reason."""


def _text(data: dict, key: str) -> str | None:
    """A JSON field that must be text (or a whole number, for ids); None if absent."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{key} {quoted(value)} is not text")


def _object(data: dict, key: str) -> dict:
    """A JSON field that must be an object (or absent)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{key} {quoted(value)} is not an object")
    return value


def _minor_units(value: Any, key: str, text: bool = False) -> int:
    """A JSON amount already in minor units (``text``: or its digits, as a form sends it)."""
    try:
        return whole_minor(value, text=text)
    except ValueError as e:
        raise InputError(f"{key} {quoted(value)} {e}") from None


def _currency(value: str, column: str) -> str:
    try:
        return currency_code(value)
    except InputError as e:
        raise InputError(f"{column}: {e}") from None


def _not_negative(amount: int, column: str, text: str) -> int:
    if amount < 0:
        raise InputError(f"{column} {quoted(text)} is negative")
    return amount


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "t")


def _money(row: dict, column: str, currency: str, decimal_comma: bool = False) -> int:
    value = (row.get(column) or "").strip()
    if not value:
        return 0
    try:
        amount = to_minor(value, currency, decimal_comma=decimal_comma)
    except InputError as e:
        raise InputError(f"{column}: {e}") from None
    return _not_negative(amount, column, value)


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
    # A chargeback the seller lost took the money back, as a refund would.
    lost = _flag(row.get("Disputed?")) and not _flag(row.get("Dispute Won?"))
    fully = (
        _flag(row.get("Fully Refunded?")) or (_flag(row.get("Refunded?")) and not partial) or lost
    )
    refunded = amount if fully else min(partial, amount)
    # Gumroad writes the whole time here (`created_at.to_time.to_s`: '2024-03-14
    # 09:12:31 UTC' or '... +0000'); older samples held only 'HH:MM:SS'.
    time_column = "Purchase Time (UTC timezone)"
    time = (row.get(time_column) or "").strip()
    if len(time) > len("HH:MM:SS"):
        at = parse_time(time, time_column)
    else:
        date = _need(row, "Purchase Date")
        stamp = date if "T" in date or ":" in date else f"{date} {time or '00:00:00'}"
        at = parse_time(stamp, "Purchase Date")
    number = (row.get("Order Number") or "").strip()
    return Sale(
        source="gumroad",
        order_id=purchase_id,
        aliases=(f"order_number:{number}",) if number else (),
        amount=amount,
        currency=currency,
        at=at,
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
    if status in ("failed", "canceled", "blocked", "incomplete"):
        raise Skip(f"{status} payment")
    if (row.get("Captured") or "true").strip().lower() == "false":
        raise Skip("not captured")
    currency = _currency(_need(row, "Currency"), "Currency")
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
    # The payment intent is the order a checkout webhook names; the charge (or
    # payment) id stays an alias. Without the column they cannot be matched.
    charge_id = _need(row, "id")
    intent = (row.get("PaymentIntent ID") or row.get("Payment Intent ID") or "").strip()
    return Sale(
        source="stripe",
        order_id=intent or charge_id,
        aliases=(charge_id,) if intent else (),
        amount=amount,
        currency=currency,
        at=parse_time(row.get(date_column) or "", date_column),
        # 'Pending': a bank debit still processing; not revenue until it is Paid.
        status="pending" if status == "pending" else _status(amount, refunded),
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
    if financial in ("voided", "expired"):
        raise Skip(f"{financial} order")  # an authorization never captured: no sale
    status = SHOPIFY_STATUS.get(financial)
    if status is None:
        raise InputError(f"Financial Status {quoted(financial)} is not one listkit knows")
    currency = _currency(_need(row, "Currency"), "Currency")
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
    decimal_comma: bool = False


def generic_row(row: dict, cols: Columns) -> Sale:
    if cols.fixed_currency:
        currency = currency_code(cols.fixed_currency)
    else:
        currency = _currency(_need(row, cols.currency or "currency"), cols.currency or "currency")
    if not (row.get(cols.amount) or "").strip():
        raise InputError(f"{cols.amount} is empty")
    amount = _money(row, cols.amount, currency, cols.decimal_comma)
    refunded = (
        min(_money(row, cols.refunded, currency, cols.decimal_comma), amount)
        if cols.refunded
        else 0
    )
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


# --- Webhook payloads (JSON lines, and `listkit serve`'s /hooks routes) ------------------------


def _json_flag(data: dict, key: str) -> bool:
    value = data.get(key)
    return value if isinstance(value, bool) else _flag(_text(data, key))


def _gumroad_ping(data: dict, token_param: str) -> Sale:
    if _json_flag(data, "test"):
        raise Skip("test purchase")
    if _json_flag(data, "is_preorder_authorization"):
        raise Skip("not a charge (pre-order authorization)")
    wanted = (token_param, "utm_campaign", "utm_content")
    params: dict[str, str | None] = {}
    for key in data:
        k = key.replace("%5B", "[").replace("%5D", "]").replace("%5b", "[").replace("%5d", "]")
        if k.startswith("url_params[") and k.endswith("]") and k[11:-1] in wanted:
            params[k[11:-1]] = _text(data, key)
    nested = data.get("url_params")
    if isinstance(nested, dict):
        params.update({k: _text(nested, k) for k in wanted if k in nested})
    # Gumroad's docs: `price` is "the price paid, in USD cents" whatever the
    # product's `currency` says, so the sale is booked in USD.
    amount = _minor_units(data.get("price", ""), "price", text=True)
    lost = _json_flag(data, "disputed") and not _json_flag(data, "dispute_won")
    refunded = _json_flag(data, "refunded") or lost
    # The CSV's Purchase ID and the ping's sale_id name a sale differently in
    # places; both carry the numeric order number (external_id_numeric).
    number = _text(data, "order_number")
    return Sale(
        source="gumroad",
        order_id=_text(data, "sale_id") or _missing("sale_id"),
        aliases=(f"order_number:{number}",) if number else (),
        amount=amount,
        currency="USD",
        at=parse_time(data.get("sale_timestamp"), "sale_timestamp"),
        status="refunded" if refunded and amount else "paid",
        refunded=amount if refunded else 0,
        email=_text(data, "email"),
        coupon=_text(data, "offer_code"),
        token=params.get(token_param) or None,
        utm_campaign=params.get("utm_campaign") or None,
        utm_content=params.get("utm_content") or None,
        product=_text(data, "product_name") or _text(data, "product_id"),
        raw=data,
    )


def _missing(name: str) -> str:
    raise InputError(f"{name} is missing")


def _status(amount: int, refunded: int) -> str:
    if amount and refunded >= amount:
        return "refunded"
    return "partially_refunded" if refunded else "paid"


STRIPE_SALE_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


def _stripe_event(event: dict, token_param: str) -> Sale:
    kind = _text(event, "type")
    if kind not in (*STRIPE_SALE_EVENTS, "charge.refunded"):
        raise Skip(f"Stripe event {quoted(kind)} is not a sale or refund")
    if event.get("livemode") is False:
        raise Skip("test mode event")
    obj = _object(_object(event, "data"), "object")
    metadata = _object(obj, "metadata")
    if kind == "charge.refunded":
        return _stripe_charge(event, obj, metadata, token_param)
    payment_status = obj.get("payment_status")
    if payment_status not in ("paid", "no_payment_required"):
        # 'unpaid': a delayed method (bank debit, voucher); the sale comes with
        # checkout.session.async_payment_succeeded.
        raise Skip(f"payment_status {quoted(payment_status)}")
    if payment_status == "no_payment_required" and not obj.get("amount_total"):
        raise Skip("no payment (setup or free checkout)")
    currency = _currency(_text(obj, "currency") or "", "currency")
    amount = from_stripe_minor(_minor_units(obj.get("amount_total"), "amount_total"), currency)
    session_id = _text(obj, "id")
    intent = _text(obj, "payment_intent")
    # A subscription checkout has no payment intent of its own, only its first
    # invoice, which that invoice's charge names too.
    invoice = _text(obj, "invoice")
    # The event's time is when the payment succeeded; the session's `created` is
    # when the buyer opened the checkout.
    created = event.get("created") or obj.get("created")
    return Sale(
        source="stripe",
        order_id=intent or session_id or _missing("id"),
        aliases=_others(intent or session_id, session_id, invoice),
        amount=amount,
        currency=currency,
        at=parse_time(created, "created"),
        email=_text(_object(obj, "customer_details"), "email") or _text(obj, "customer_email"),
        coupon=_text(metadata, "coupon"),
        token=_text(obj, "client_reference_id") or _text(metadata, token_param),
        utm_campaign=_text(metadata, "utm_campaign"),
        utm_content=_text(metadata, "utm_content"),
        raw=event,
    )


def _others(order_id: str | None, *ids: str | None) -> tuple[str, ...]:
    return tuple(i for i in dict.fromkeys(ids) if i and i != order_id)


def _stripe_charge(event: dict, charge: dict, metadata: dict, token_param: str) -> Sale:
    currency = _currency(_text(charge, "currency") or "", "currency")
    amount = from_stripe_minor(_minor_units(charge.get("amount"), "amount"), currency)
    refunded = from_stripe_minor(
        _minor_units(charge.get("amount_refunded", 0), "amount_refunded"), currency
    )
    refunded = min(refunded, amount)
    if charge.get("refunded") is True:
        refunded = amount
    charge_id = _text(charge, "id")
    intent = _text(charge, "payment_intent")
    invoice = _text(charge, "invoice")
    return Sale(
        source="stripe",
        order_id=intent or charge_id or _missing("id"),
        aliases=_others(intent or charge_id, charge_id, invoice),
        amount=amount,
        currency=currency,
        at=parse_time(charge.get("created") or event.get("created"), "created"),
        status=_status(amount, refunded),
        refunded=refunded,
        email=_text(_object(charge, "billing_details"), "email") or _text(charge, "receipt_email"),
        coupon=_text(metadata, "coupon"),
        token=_text(metadata, token_param) or _text(metadata, "client_reference_id"),
        utm_campaign=_text(metadata, "utm_campaign"),
        utm_content=_text(metadata, "utm_content"),
        raw=event,
    )


LEMON_SQUEEZY_SKIP = {"pending": "pending payment", "failed": "failed payment"}
LEMON_SQUEEZY_SKIP["fraudulent"] = "fraudulent order"


def _lemon_squeezy(payload: dict, token_param: str) -> Sale:
    meta = _object(payload, "meta")
    event = _text(meta, "event_name")
    if event not in ("order_created", "order_refunded"):
        raise Skip(f"Lemon Squeezy event {quoted(event)} is not an order")
    data = _object(payload, "data")
    attrs = _object(data, "attributes")
    if meta.get("test_mode") is True or attrs.get("test_mode") is True:
        raise Skip("test mode order")
    custom = _object(meta, "custom_data")
    status = _text(attrs, "status") or "paid"
    if status in LEMON_SQUEEZY_SKIP:
        raise Skip(LEMON_SQUEEZY_SKIP[status])
    if status not in ("paid", "refunded", "partial_refund"):
        raise InputError(f"status {quoted(status)} is not one listkit knows")
    currency = _currency(_text(attrs, "currency") or "", "currency")
    total = _minor_units(attrs.get("total"), "total")
    # A partial refund leaves the order 'paid' (or 'partial_refund') with its
    # refunded_amount set; a full one says refunded.
    refunded = min(_minor_units(attrs.get("refunded_amount") or 0, "refunded_amount"), total)
    if attrs.get("refunded") is True or status == "refunded":
        refunded = total
    return Sale(
        source="lemonsqueezy",
        order_id=_text(attrs, "order_number") or _text(data, "id") or _missing("order_number"),
        amount=total,
        currency=currency,
        at=parse_time(attrs.get("created_at"), "created_at"),
        status=_status(total, refunded),
        refunded=refunded,
        email=_text(attrs, "user_email"),
        coupon=_text(custom, "coupon"),
        token=_text(custom, token_param),
        utm_campaign=_text(custom, "utm_campaign"),
        utm_content=_text(custom, "utm_content"),
        product=_text(_object(attrs, "first_order_item"), "product_name"),
        raw=payload,
    )


def listkit_sale(data: dict, token_param: str = Settings.token_param.default) -> Sale:
    """A sale in listkit's own JSON (``POST /hooks/sale``): ``order_id``, ``amount`` (decimal
    text in major units, e.g. "29.00"), ``currency``, ``at`` (ISO 8601 or Unix time); optional
    ``email``, ``refunded``, ``coupon``, ``token`` (or the token parameter), ``utm_campaign``,
    ``utm_content``, ``product``, ``source`` (default "webhook")."""
    currency = _currency(_text(data, "currency") or "", "currency")
    amount = _not_negative(_json_amount(data, "amount", currency, required=True), "amount", "")
    refunded = min(_json_amount(data, "refunded", currency), amount)
    source = _text(data, "source") or "webhook"
    if not re.fullmatch(r"[a-z0-9_-]{1,32}", source):
        raise InputError(f"source {quoted(source)} is not a short lower-case name")
    return Sale(
        source=source,
        order_id=_text(data, "order_id") or _missing("order_id"),
        amount=amount,
        currency=currency,
        at=parse_time(data.get("at"), "at"),
        status=_status(amount, refunded),
        refunded=refunded,
        email=_text(data, "email"),
        coupon=_text(data, "coupon"),
        token=_text(data, "token") or _text(data, token_param),
        utm_campaign=_text(data, "utm_campaign"),
        utm_content=_text(data, "utm_content"),
        product=_text(data, "product"),
        raw=data,
    )


def _json_amount(data: dict, key: str, currency: str, required: bool = False) -> int:
    text = _text(data, key)
    if text is None:
        if required:
            _missing(key)
        return 0
    try:
        amount = to_minor(text, currency)
    except InputError as e:
        raise InputError(f"{key}: {e}") from None
    return _not_negative(amount, key, text)


def parse_payload(text: str) -> dict:
    """One saved webhook payload: a JSON object, or a raw form-encoded body."""
    text = text.strip()
    if text.startswith("{"):
        return loads_object(text)
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=1000))
    except ValueError:
        raise InputError("not a form body listkit can read (over 1,000 fields)") from None


def record_sale(data: dict, token_param: str) -> Sale:
    """A webhook payload (already parsed) as a Sale; Skip or InputError otherwise."""
    if data.get("object") == "event" or ("type" in data and "data" in data):
        return _stripe_event(data, token_param)
    if "meta" in data and "data" in data:
        return _lemon_squeezy(data, token_param)
    if "sale_id" in data:
        return _gumroad_ping(data, token_param)
    raise InputError("not a Gumroad ping, Stripe event or Lemon Squeezy order")


def webhook_sale(line: str, token_param: str) -> Sale:
    return record_sale(parse_payload(line), token_param)


def _looks_like_ping(line: str) -> bool:
    """A saved Gumroad ping as its raw form body (``sale_id=...&price=...``)."""
    if "=" not in line or "," in line.split("&", 1)[0]:
        return False
    try:
        keys = {k for k, _v in parse_qsl(line.strip(), max_num_fields=1000)}
    except ValueError:
        return False
    return "sale_id" in keys


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


def _csv_records(text: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict | InputError]]]:
    records = csvin.records(text, "the file")
    try:
        _, header = next(records)
    except StopIteration:
        raise InputError("the file is empty: expected a header row and sales") from None
    if isinstance(header, str):
        raise InputError(f"the header row cannot be read as CSV ({header})")
    header = [h.strip().lstrip("\ufeff") for h in header]

    def rows() -> Iterator[tuple[int, dict | InputError]]:
        for line, values in records:
            if isinstance(values, str):  # a broken record: that line only, the reader goes on
                yield line, InputError(f"this row cannot be read as CSV: {values}")
            elif any(v.strip() for v in values):
                yield line, dict(zip(header, values, strict=False))

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
    token_param: str = Settings.token_param.default,
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
    first = content.lstrip().split("\n", 1)[0]
    if fmt == "auto" and (first[:1] == "{" or _looks_like_ping(first)):
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
        if cols.fixed_currency:
            try:
                currency_code(cols.fixed_currency)
            except InputError as e:
                raise InputError(f"--currency: {e}") from None
        needed = [cols.order, cols.amount, cols.date] + (
            [] if cols.fixed_currency else [cols.currency]
        )
        missing = [c for c in needed if c not in header]
        if missing:
            raise InputError(
                f"the header lacks {', '.join(repr(c) for c in missing)} (columns: "
                f"{', '.join(quoted(c) for c in header)}); map them with --order-column, "
                "--amount-column, --currency-column (or --currency), --date-column"
            )
        parse = lambda row: generic_row(row, cols)  # noqa: E731
    elif fmt == "gumroad":
        parse = gumroad_row
    elif fmt == "stripe":
        keys = (token_param, "client_reference_id", "token")
        parse = lambda row: stripe_row(row, keys)  # noqa: E731
    else:
        parse = shopify_row
    return fmt, _results(((n, lambda row=row: parse(_readable(row))) for n, row in rows))


def _readable(row: dict | InputError) -> dict:
    if isinstance(row, InputError):
        raise row
    return row


def _results(items: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Sale | Skip | InputError]]:
    for number, make in items:
        yield number, parse_one(make)


def _checked(sale: Sale) -> Sale:
    """The sale, if every text in it can be stored (JSON's ``\\ud800`` cannot)."""
    for name in ("order_id", "email", "coupon", "token", "utm_campaign", "utm_content", "product"):
        value = getattr(sale, name)
        if value is not None and not _is_unicode(value):
            raise InputError(f"{name} is not valid Unicode text")
    if not all(_is_unicode(a) for a in sale.aliases):
        raise InputError("an id is not valid Unicode text")
    if not _is_unicode(json.dumps(sale.raw, ensure_ascii=False, default=str)):
        raise InputError("the record holds text that is not valid Unicode")
    return sale


def _email_key(email: str | None) -> str | None:
    """The buyer's key for attribution by email; None when the address cannot have one
    (the sale still counts, it is just not matched by email)."""
    if not email:
        return None
    try:
        return email_key(email)
    except (ValueError, ListkitError):
        return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_one(make: Callable[[], Sale]) -> Sale | Skip | InputError:
    """``make()``, or the Skip or InputError that says why this record is no sale.

    A record this module did not foresee (a value of a type or size nobody
    sends) is rejected like any other bad record: one bad line never stops the
    others, and never shows a traceback.
    """
    try:
        return _checked(make())
    except (Skip, InputError) as e:
        return e
    except RecursionError:
        return InputError("nested too deeply to be a sale record")
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as e:
        return InputError(f"not a sale record listkit can read ({type(e).__name__})")


def store(
    db: Database, sales: Iterable[tuple[int, Sale | Skip | InputError]], summary: SalesSummary
) -> list[int]:
    """Insert or update sales (one transaction); return the ids that changed."""
    with immediate(db):
        return store_records(db, sales, summary)


def _existing(db: Database, sale: Sale) -> tuple | None:
    """The stored order this sale is, found by its order id or any alias (oldest first)."""
    ids = json.dumps([sale.order_id, *sale.aliases])
    return db.execute(
        """SELECT id, status, amount, refunded, currency, order_id FROM sales WHERE id = (
             SELECT min(id) FROM (
               SELECT id FROM sales
               WHERE source = ? AND order_id IN (SELECT value FROM json_each(?))
               UNION ALL SELECT sale_id FROM sale_aliases
               WHERE source = ? AND alias IN (SELECT value FROM json_each(?))))""",
        [sale.source, ids, sale.source, ids],
    ).fetchone()


def store_records(
    db: Database, sales: Iterable[tuple[int, Sale | Skip | InputError]], summary: SalesSummary
) -> list[int]:
    """``store`` without its transaction: for callers inside one (``listkit serve``'s writer).

    Refunds only grow: an older record of an order (a replayed checkout event
    after its refund) never takes a refund back.
    """
    changed: list[int] = []
    stamp = now()
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
        row = _existing(db, sale)
        status, refunded = sale.status, sale.refunded
        if (
            row is not None
            and (row[2], row[4]) == (sale.amount, sale.currency)
            and row[3] > refunded
        ):
            refunded = row[3]
            status = status if status == "pending" else _status(sale.amount, refunded)
        values = [
            status,
            sale.amount,
            refunded,
            sale.currency,
            sale.at,
            sale.email,
            _email_key(sale.email),
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
        elif tuple(row[1:5]) != (status, sale.amount, refunded, sale.currency):
            sale_id = row[0]
            db.execute(
                """UPDATE sales SET status = ?, amount = ?, refunded = ?, currency = ?, at = ?,
                   email = coalesce(?, email), email_key = coalesce(?, email_key),
                   coupon = coalesce(?, coupon), token = coalesce(?, token),
                   utm_campaign = coalesce(?, utm_campaign), utm_content = coalesce(?, utm_content),
                   product = coalesce(?, product), raw = ?, updated = ? WHERE id = ?""",
                [*values, stamp, sale_id],
            )
            summary.updated += 1
            changed.append(sale_id)
        else:
            sale_id = row[0]
            summary.unchanged += 1
        stored_id = row[5] if row is not None else sale.order_id
        db.conn.executemany(
            "INSERT OR IGNORE INTO sale_aliases (source, alias, sale_id) VALUES (?, ?, ?)",
            [(sale.source, a, sale_id) for a in {sale.order_id, *sale.aliases} - {stored_id}],
        )
    if changed:
        on_sales(db, changed)
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
