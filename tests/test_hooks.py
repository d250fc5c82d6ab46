"""Live sales webhooks on `listkit serve`: each producer's signature scheme, replays,
bad payloads, unset secrets; the same store and attribution as `listkit sales import`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient

from listkit.cli import cli
from listkit.web import create_app
from listkit.web.hooks import verify_timestamped
from listkit.workspace import Workspace
from tests.web_server import serve
from tests.world import World

STRIPE = "whsec_test_current_0123456789"
STRIPE_OLD = "whsec_test_previous_9876543210"
LEMON = "lemon-secret-0123456789"
GUMROAD = "gumroad-path-secret-0123456789"
OWN = "listkit-hook-secret-0123456789"
SECRETS = {
    "LISTKIT_STRIPE_WEBHOOK_SECRET": f"{STRIPE},{STRIPE_OLD}",
    "LISTKIT_LEMONSQUEEZY_SECRET": LEMON,
    "LISTKIT_GUMROAD_SECRET": GUMROAD,
    "LISTKIT_WEBHOOK_SECRET": OWN,
}


def configure(workspace: Path, settings: dict[str, str]) -> None:
    with (workspace / ".env").open("a") as f:
        f.writelines(f"{k}={v}\n" for k, v in settings.items())


@pytest.fixture
def hooked(workspace):
    configure(workspace, SECRETS)
    w = Workspace(workspace)
    yield w
    w.close()


@pytest.fixture
def client(hooked):
    with TestClient(create_app(hooked), raise_server_exceptions=False) as c:
        yield c


def sales_rows(workspace: Path) -> list[dict]:
    out = CliRunner().invoke(cli, ["--workspace", str(workspace), "sales", "ls", "--json"]).output
    return json.loads(out)


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def checkout(kind="checkout.session.completed", token=None, **obj) -> bytes:
    session = {"object": "checkout.session", "id": "cs_live_1", "payment_intent": "pi_live_1",
               "client_reference_id": token, "customer_details": {"email": "jo@example.com"},
               "amount_total": 4900, "currency": "eur", "payment_status": "paid",
               "metadata": {}, "created": 1794000000}  # fmt: skip
    session.update(obj)
    event = {"id": "evt_1", "object": "event", "type": kind, "livemode": True,
             "created": 1794000100, "data": {"object": session}}  # fmt: skip
    return json.dumps(event).encode()


def post_stripe(client, body: bytes, signature: str | None = None, **headers):
    h = {"Stripe-Signature": signature or sign(STRIPE, body), **headers}
    return client.post("/hooks/stripe", content=body, headers=h)


# --- Stripe ---------------------------------------------------------------------------------


def test_a_signed_stripe_checkout_is_recorded_once_and_a_replay_changes_nothing(client, workspace):
    body = checkout()
    r = post_stripe(client, body)
    assert (r.status_code, r.text) == (200, "Sale recorded.\n")
    r = post_stripe(client, body)
    assert (r.status_code, r.text) == (200, "Sale unchanged.\n")
    rows = sales_rows(workspace)
    assert [(s["source"], s["order"], s["amount"], s["currency"]) for s in rows] == [
        ("stripe", "pi_live_1", 4900, "EUR")
    ]


def test_stripe_signatures_from_a_rotated_secret_are_accepted(client, workspace):
    body = checkout()
    good = sign(STRIPE_OLD, body)
    t, v1 = good.split(",")
    assert post_stripe(client, body, f"{t},v1={'0' * 64},{v1}").status_code == 200
    assert len(sales_rows(workspace)) == 1


@pytest.mark.parametrize(
    "signature, reason",
    [
        (None, "Missing signature header."),
        ("t=123", "Malformed signature header."),
        ("v1=abc", "Malformed signature header."),
        ("forged", "Malformed signature header."),
    ],
)
def test_a_stripe_request_without_a_usable_signature_stores_nothing(
    client, workspace, signature, reason
):
    headers = {} if signature is None else {"Stripe-Signature": signature}
    r = client.post("/hooks/stripe", content=checkout(), headers=headers)
    assert (r.status_code, r.text) == (400, reason + "\n")
    assert sales_rows(workspace) == []


def test_forged_tampered_and_expired_stripe_requests_store_nothing(client, workspace):
    body = checkout()
    assert post_stripe(client, body, sign("whsec_someone_else", body)).text == "Bad signature.\n"
    tampered = body.replace(b"4900", b"9")
    r = post_stripe(client, tampered, sign(STRIPE, body))
    assert (r.status_code, r.text) == (400, "Bad signature.\n")
    old = sign(STRIPE, body, t=int(time.time()) - 301)
    r = post_stripe(client, body, old)
    assert r.status_code == 400 and "tolerance" in r.text
    assert sales_rows(workspace) == []


def test_a_stripe_delayed_payment_and_its_refund_through_the_hook(client, workspace):
    assert "Ignored" in post_stripe(client, checkout(payment_status="unpaid")).text
    assert sales_rows(workspace) == []
    r = post_stripe(client, checkout("checkout.session.async_payment_succeeded"))
    assert r.text == "Sale recorded.\n"
    charge = {"object": "charge", "id": "ch_live_1", "payment_intent": "pi_live_1",
              "amount": 4900, "amount_refunded": 4900, "refunded": True, "currency": "eur",
              "created": 1794000100, "billing_details": {"email": None},
              "metadata": {}}  # fmt: skip
    event = {"object": "event", "type": "charge.refunded", "livemode": True, "created": 1794009999,
             "data": {"object": charge}}  # fmt: skip
    assert post_stripe(client, json.dumps(event).encode()).text == "Sale updated.\n"
    (row,) = sales_rows(workspace)
    assert (row["status"], row["refunded"], row["email"]) == ("refunded", 4900, "jo@example.com")


def test_stripe_events_that_do_not_matter_get_200_and_nothing_stored(client, workspace):
    body = json.dumps({"object": "event", "type": "customer.created", "data": {"object": {}}})
    r = post_stripe(client, body.encode())
    assert (r.status_code, r.text) == (200, "Ignored: Stripe event 'customer.created' is not a "
                                       "sale or refund.\n")  # fmt: skip
    assert sales_rows(workspace) == []


def test_a_signed_but_bad_stripe_payload_gets_400_with_a_reason(client, workspace):
    r = post_stripe(client, b"not json")
    assert r.status_code == 400
    assert r.text == "Bad payload: not JSON (Expecting value at line 1, column 1).\n"
    r = post_stripe(client, checkout(amount_total=1).replace(b"1,", b"1" * 5000 + b","))
    assert (r.status_code, r.text) == (
        400,
        "Bad payload: not JSON listkit reads: a number longer than 40 digits.\n",
    )
    r = post_stripe(client, b'{"a": ' * 5000 + b"1" + b"}" * 5000)
    assert (r.status_code, r.text) == (400, "Bad payload: nested too deeply (over 32 levels).\n")
    r = post_stripe(client, checkout(amount_total=-5))
    assert (r.status_code, r.text) == (400, "Bad payload: amount_total -5 is negative.\n")
    r = post_stripe(client, checkout(currency="ZZZ"))
    assert r.status_code == 400 and "ISO 4217" in r.text
    assert sales_rows(workspace) == []


def test_oversized_bodies_and_wrong_methods_are_refused(client, workspace):
    big = b"{" + b" " * (300 * 1024) + b"}"
    assert post_stripe(client, big).status_code == 413
    assert post_lemon(client, big).status_code == 413
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = client.post(f"/hooks/gumroad/{GUMROAD}", content=b"a=" + b"x" * 300 * 1024, headers=form)
    assert r.status_code == 413
    r = client.post("/hooks/sale", content=big, headers={"X-Listkit-Signature": sign(OWN, big)})
    assert r.status_code == 413
    assert client.get("/hooks/stripe").status_code == 405
    assert client.get("/hooks/sale").status_code == 405
    assert client.get(f"/hooks/gumroad/{GUMROAD}").status_code == 405
    assert client.put("/hooks/lemonsqueezy").status_code == 405
    assert sales_rows(workspace) == []


def test_a_route_whose_secret_is_not_set_answers_404_and_never_accepts_data(ws, workspace):
    with TestClient(create_app(ws), raise_server_exceptions=False) as c:
        body = checkout()
        assert c.post("/hooks/stripe", content=body, headers={"Stripe-Signature": sign("", body)}
                      ).status_code == 404  # fmt: skip
        assert c.post("/hooks/lemonsqueezy", content=b"{}").status_code == 404
        assert c.post("/hooks/gumroad/anything", data={"sale_id": "x"}).status_code == 404
        assert c.post("/hooks/sale", content=b"{}").status_code == 404
    assert sales_rows(workspace) == []


# --- the Stripe CSV and the webhook: one order -----------------------------------------------


def test_a_stripe_payment_from_the_csv_and_from_the_hook_is_one_order(client, workspace, tmp_path):
    post_stripe(client, checkout())
    export = tmp_path / "payments.csv"
    export.write_text(
        "id,Created date (UTC),Amount,Amount Refunded,Currency,Captured,Status,"
        "Customer Email,PaymentIntent ID\n"
        "ch_live_1,2026-11-08T01:06:40,49.00,0,eur,true,Paid,jo@example.com,pi_live_1\n"
    )
    out = CliRunner().invoke(
        cli, ["--workspace", str(workspace), "sales", "import", str(export), "--json"]
    )
    summary = json.loads(out.output)
    assert (summary["imported"], summary["unchanged"] + summary["updated"]) == (0, 1)
    assert len(sales_rows(workspace)) == 1


# --- Lemon Squeezy ----------------------------------------------------------------------------


def lemon_body(status="paid", **custom) -> bytes:
    attributes = {"order_number": 77, "user_email": "kay@example.com", "currency": "USD",
                  "total": 1500, "status": status, "refunded": False,
                  "created_at": "2026-11-07T12:00:00.000000Z"}  # fmt: skip
    payload = {"meta": {"event_name": "order_created", "custom_data": custom},
               "data": {"type": "orders", "id": "77", "attributes": attributes}}  # fmt: skip
    return json.dumps(payload).encode()


def post_lemon(client, body: bytes, secret: str = LEMON):
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post("/hooks/lemonsqueezy", content=body, headers={"X-Signature": sig})


def test_lemon_squeezy_orders_are_verified_recorded_and_replays_change_nothing(client, workspace):
    assert post_lemon(client, lemon_body()).text == "Sale recorded.\n"
    assert post_lemon(client, lemon_body()).text == "Sale unchanged.\n"
    assert post_lemon(client, lemon_body("pending")).text == "Ignored: pending payment.\n"
    assert [s["order"] for s in sales_rows(workspace)] == ["77"]


def test_forged_and_tampered_lemon_squeezy_requests_store_nothing(client, workspace):
    assert post_lemon(client, lemon_body(), secret="wrong").status_code == 400
    body = lemon_body()
    sig = hmac.new(LEMON.encode(), body, hashlib.sha256).hexdigest()
    r = client.post(
        "/hooks/lemonsqueezy", content=body.replace(b"1500", b"15"), headers={"X-Signature": sig}
    )
    assert (r.status_code, r.text) == (400, "Bad signature.\n")
    assert client.post("/hooks/lemonsqueezy", content=body).status_code == 400
    assert sales_rows(workspace) == []


# --- Gumroad ----------------------------------------------------------------------------------


def gumroad_form(**kw) -> dict:
    form = {"sale_id": "gs1", "sale_timestamp": "2026-11-06T09:12:31Z", "email": "ann@example.com",
            "price": "1100", "currency": "eur", "refunded": "false", "test": "false",
            "url_params[utm_campaign]": "launch"}  # fmt: skip
    form.update(kw)
    return form


def test_a_gumroad_ping_with_the_secret_path_is_recorded_in_usd_cents(client, workspace):
    r = client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form())
    assert (r.status_code, r.text) == (200, "Sale recorded.\n")
    assert client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form()).text == (
        "Sale unchanged.\n"
    )
    (row,) = sales_rows(workspace)
    assert (row["order"], row["amount"], row["currency"]) == ("gs1", 1100, "USD")


def test_a_gumroad_ping_with_a_wrong_secret_or_a_test_purchase_stores_nothing(client, workspace):
    assert client.post("/hooks/gumroad/guess", data=gumroad_form()).status_code == 404
    assert client.post(f"/hooks/gumroad/{GUMROAD}x", data=gumroad_form()).status_code == 404
    r = client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form(test="true"))
    assert (r.status_code, r.text) == (200, "Ignored: test purchase.\n")
    r = client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form(price="-1"))
    assert (r.status_code, r.text) == (400, "Bad payload: price '-1' is negative.\n")
    r = client.post(f"/hooks/gumroad/{GUMROAD}", content=b"sale_id=x", headers={
        "Content-Type": "text/plain"})  # fmt: skip
    assert r.status_code == 415
    assert sales_rows(workspace) == []


# --- listkit's own signed sale ------------------------------------------------------------------


def test_a_signed_listkit_sale_is_recorded_and_forged_or_old_ones_are_not(client, workspace):
    sale = {"order_id": "A-1", "amount": "29.00", "currency": "EUR", "at": "2026-11-07T12:00:00Z",
            "email": "lu@example.com", "source": "myshop"}  # fmt: skip
    body = json.dumps(sale).encode()
    post = lambda b, sig: client.post(  # noqa: E731
        "/hooks/sale", content=b, headers={"X-Listkit-Signature": sig}
    )
    assert post(body, sign("not-the-secret", body)).status_code == 400
    assert post(body, sign(OWN, body, t=int(time.time()) - 3600)).status_code == 400
    assert sales_rows(workspace) == []
    assert post(body, sign(OWN, body)).text == "Sale recorded.\n"
    assert post(body, sign(OWN, body)).text == "Sale unchanged.\n"
    bad = json.dumps({**sale, "amount": "29,00,0"}).encode()
    r = post(bad, sign(OWN, bad))
    assert (r.status_code, r.text) == (400, "Bad payload: amount: '29,00,0' is not an amount.\n")
    (row,) = sales_rows(workspace)
    assert (row["source"], row["order"], row["amount"]) == ("myshop", "A-1", 2900)


# --- secrets stay secret; a real process end to end --------------------------------------------


def test_webhook_secrets_are_masked_by_listkit_config(hooked, workspace):
    out = CliRunner().invoke(cli, ["--workspace", str(workspace), "config"]).output
    for name, value in SECRETS.items():
        assert name in out
        for part in value.split(","):
            assert part not in out


def test_the_log_never_holds_a_secret(client, caplog):
    caplog.set_level(logging.INFO, logger="listkit.serve")
    client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form())
    client.post("/hooks/gumroad/wrong-guess", data=gumroad_form())
    post_stripe(client, checkout())
    assert "/hooks/gumroad/{secret}" in caplog.text
    for value in [*SECRETS.values(), STRIPE, STRIPE_OLD, "wrong-guess"]:
        assert value not in caplog.text


def test_a_signed_stripe_event_through_a_real_server_is_attributed_by_its_token(workspace, ws):
    w = World(ws.db)
    campaign = w.campaign("launch")
    delivery = w.deliver(campaign, "jo@example.com", "blog")
    configure(
        workspace, {"LISTKIT_STRIPE_WEBHOOK_SECRET": STRIPE, "LISTKIT_GUMROAD_SECRET": GUMROAD}
    )
    body = checkout(token=delivery["token"].upper())
    with serve(workspace) as base:
        request = urllib.request.Request(
            base + "/hooks/stripe",
            data=body,
            headers={"Stripe-Signature": sign(STRIPE, body), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert (r.status, r.read()) == (200, b"Sale recorded.\n")
        ping = urllib.parse.urlencode(gumroad_form(test="true")).encode()
        with urllib.request.urlopen(base + f"/hooks/gumroad/{GUMROAD}", ping, timeout=10) as r:
            assert (r.status, r.read()) == (200, b"Ignored: test purchase.\n")
    (row,) = sales_rows(workspace)
    assert (row["order"], row["method"], row["campaign"], row["list"]) == (
        "pi_live_1",
        "token",
        "launch",
        "blog",
    )
    log = (workspace / "serve.log").read_text()
    assert "POST /hooks/gumroad/{secret} 200" in log
    assert STRIPE not in log and GUMROAD not in log


def test_a_gumroad_ping_sent_as_json_is_recorded_too(client, workspace):
    # Gumroad posts JSON instead of a form when the seller's ping content type is JSON
    # (User::PingNotification#send_test_ping, notification_content_type).
    ping = {**gumroad_form(sale_id="gj1", test=False, refunded=False), "price": 2900,
            "url_params": {"utm_campaign": "launch"}}  # fmt: skip
    ping.pop("url_params[utm_campaign]")
    r = client.post(f"/hooks/gumroad/{GUMROAD}", json=ping)
    assert (r.status_code, r.text) == (200, "Sale recorded.\n")
    (row,) = sales_rows(workspace)
    assert (row["order"], row["amount"], row["currency"]) == ("gj1", 2900, "USD")


@pytest.mark.parametrize("amount", ["٣", "１２", "٣.٠٠"])
def test_a_listkit_sale_whose_amount_is_not_in_ascii_digits_is_refused(client, workspace, amount):
    sale = {"order_id": "A-2", "amount": amount, "currency": "USD", "at": "2026-11-07T12:00:00Z"}
    body = json.dumps(sale).encode()
    r = client.post("/hooks/sale", content=body, headers={"X-Listkit-Signature": sign(OWN, body)})
    assert r.status_code == 400 and r.text.startswith("Bad payload: amount: ")
    assert sales_rows(workspace) == []


def test_a_gumroad_ping_whose_price_is_not_in_ascii_digits_is_refused(client, workspace):
    r = client.post(f"/hooks/gumroad/{GUMROAD}", data=gumroad_form(price="２９００"))
    assert r.status_code == 400 and r.text.startswith("Bad payload: price ")
    assert sales_rows(workspace) == []


def test_a_signature_timestamp_in_digits_other_than_ascii_is_malformed():
    # A header is read as Latin-1, where '²' is a digit to str.isdigit() but not to int().
    body = b'{"order_id": "A-3"}'
    digest = hmac.new(OWN.encode(), "².".encode() + body, hashlib.sha256).hexdigest()
    with pytest.raises(HTTPException) as e:
        verify_timestamped(f"t=²,v1={digest}", body, [OWN])
    assert (e.value.status_code, e.value.detail) == (400, "Malformed signature header.")


@pytest.mark.parametrize("field", ["amount", "at", "currency", "source", "refunded"])
def test_a_refused_listkit_sale_names_the_field_and_quotes_no_buyer(client, workspace, field):
    sale = {"order_id": "A-4", "amount": "3", "currency": "USD", "at": "2026-11-07T12:00:00Z"}
    sale[field] = "ann.buyer@example.com"
    body = json.dumps(sale).encode()
    r = client.post("/hooks/sale", content=body, headers={"X-Listkit-Signature": sign(OWN, body)})
    assert r.status_code == 400 and r.text.startswith("Bad payload: ")
    assert field in r.text and "ann.buyer" not in r.text
