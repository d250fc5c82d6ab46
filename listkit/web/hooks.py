"""Live sales webhooks: Stripe, Lemon Squeezy, Gumroad and listkit's own signed sale.

The rule: a delivery is verified by its producer's own scheme (checked by
``listkit.signing``) before it is parsed, then goes through the same parser
and upsert as ``listkit sales import`` (``sales.record_sale`` /
``sales.store_records``) and attribution runs for the sale it changed, all
in one write that commits before the 2xx.
A route whose secret is not set answers 404; a bad signature 400 and nothing
stored; a payload that is no sale (a test purchase, an event type listkit
does not book) 200 and nothing stored; a replayed delivery changes nothing.
Secrets never appear in an answer or the log (the log names the route
template, never the path).
"""

from __future__ import annotations

from sqlite_utils import Database
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from listkit import signing
from listkit.errors import InputError
from listkit.sales.attribution import attribute_sales
from listkit.sales.sales import (
    Sale,
    SalesSummary,
    Skip,
    listkit_sale,
    parse_one,
    record_sale,
    store_records,
)
from listkit.web.common import json_object, read_body, read_form


def _secret(request: Request, attr: str) -> str:
    """The setting's value; 404 when it is not set (the route is not configured)."""
    value = getattr(request.app.state.ws.settings, attr)
    if not value:
        raise HTTPException(404, "Not Found")
    return value


def verify_timestamped(
    header: str | None, body: bytes, secrets: list[str], now: float | None = None
) -> None:
    """``signing.verify_timestamped`` (Stripe's scheme, also listkit's own); HTTPException(400)."""
    try:
        signing.verify_timestamped(header, body, secrets, now)
    except signing.SignatureRefused as e:
        raise HTTPException(400, str(e)) from None


def _store(db: Database, secret: bytes, sale: Sale) -> dict:
    """Inside the writer's transaction: upsert the sale, attribute what changed."""
    summary = SalesSummary(file="webhook")
    changed = store_records(db, [(0, sale)], summary)
    attributed = attribute_sales(db, secret, changed) if changed else {}
    return {"imported": summary.imported, "updated": summary.updated, "attributed": attributed}


async def _book(request: Request, make) -> Response:
    item = parse_one(make)
    if isinstance(item, Skip):
        return PlainTextResponse(f"Ignored: {item}.\n")
    if isinstance(item, InputError):
        raise HTTPException(400, f"Bad payload: {item}.")
    secret = request.app.state.ws.settings.secret_key()
    result = await request.app.state.db.write(_store, secret, item)
    word = "recorded" if result["imported"] else "updated" if result["updated"] else "unchanged"
    return PlainTextResponse(f"Sale {word}.\n")


def _token_param(request: Request) -> str:
    return request.app.state.ws.settings.token_param


async def stripe(request: Request) -> Response:
    """Stripe: checkout.session.completed / async_payment_succeeded, charge.refunded."""
    raw = _secret(request, "stripe_webhook_secret")
    secrets = [s.strip() for s in raw.split(",") if s.strip()]
    body = await read_body(request)
    verify_timestamped(request.headers.get("stripe-signature"), body, secrets)
    data = json_object(body)
    if data.get("object") != "event" or "type" not in data:
        raise HTTPException(400, "Bad payload: not a Stripe event.")
    return await _book(request, lambda: record_sale(data, _token_param(request)))


async def lemonsqueezy(request: Request) -> Response:
    """Lemon Squeezy: ``X-Signature`` is the hex HMAC-SHA256 of the raw body."""
    secret = _secret(request, "lemonsqueezy_secret")
    body = await read_body(request)
    given = (request.headers.get("x-signature") or "").strip().lower()
    if not given:
        raise HTTPException(400, "Missing signature header.")
    if not signing.same(signing.hmac_hex(secret, body), given):
        raise HTTPException(400, "Bad signature.")
    data = json_object(body)
    if not isinstance(data.get("meta"), dict):
        raise HTTPException(400, "Bad payload: not a Lemon Squeezy event.")
    return await _book(request, lambda: record_sale(data, _token_param(request)))


async def gumroad(request: Request) -> Response:
    """Gumroad Ping: unsigned form data (or JSON); the secret path segment authenticates it."""
    secret = _secret(request, "gumroad_secret")
    given = request.path_params["secret"]
    if not signing.same(secret, given):
        raise HTTPException(404, "Not Found")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":  # the seller's ping content type may be JSON
        ping: dict = json_object(await read_body(request))
    else:
        ping = await read_form(request)  # 415 for anything else
    if "sale_id" not in ping:
        raise HTTPException(400, "Bad payload: not a Gumroad ping (no sale_id).")
    return await _book(request, lambda: record_sale(ping, _token_param(request)))


async def sale(request: Request) -> Response:
    """listkit's own sale: ``X-Listkit-Signature: t=<unix>,v1=<hex>`` as Stripe signs."""
    secret = _secret(request, "webhook_secret")
    body = await read_body(request)
    verify_timestamped(request.headers.get("x-listkit-signature"), body, [secret])
    data = json_object(body)
    return await _book(request, lambda: listkit_sale(data, _token_param(request)))


routes = [
    Route("/hooks/stripe", stripe, methods=["POST"]),
    Route("/hooks/lemonsqueezy", lemonsqueezy, methods=["POST"]),
    Route("/hooks/gumroad/{secret}", gumroad, methods=["POST"]),
    Route("/hooks/sale", sale, methods=["POST"]),
]
