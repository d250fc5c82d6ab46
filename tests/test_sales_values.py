"""Sales values and statuses as the shops really send them, and bad rows that must be
refused one by one (never stored as revenue, never stopping the import)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listkit.errors import InputError
from listkit.sales.money import to_minor
from listkit.sales.sales import Sale, Skip, parse_file, webhook_sale

FIXTURES = Path(__file__).parent / "fixtures" / "sales"


def imported(run, path: Path, *args):
    return json.loads(run("sales", "import", str(path), "--json", *args).output)


def sales(run) -> dict[str, dict]:
    return {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}


def one(line: str | dict) -> Sale:
    return webhook_sale(line if isinstance(line, str) else json.dumps(line), "lk")


def stripe_event(kind: str, obj: dict, created: int = 1794000000, **extra) -> dict:
    return {"object": "event", "type": kind, "livemode": True, "created": created,
            "data": {"object": obj}, **extra}  # fmt: skip


def session(**kw) -> dict:
    obj = {"object": "checkout.session", "id": "cs_1", "payment_intent": "pi_1",
           "client_reference_id": None, "customer_details": {"email": "jo@example.com"},
           "amount_total": 4900, "currency": "gbp", "payment_status": "paid", "metadata": {},
           "created": 1793990000}  # fmt: skip
    obj.update(kw)
    return obj


def lemon(**attrs) -> dict:
    base = {"order_number": 9001, "user_email": "kay@example.com", "currency": "USD",
            "total": 1500, "status": "paid", "refunded": False,
            "created_at": "2026-11-07T12:00:00.000000Z"}  # fmt: skip
    base.update(attrs)
    return {"meta": {"event_name": "order_created", "custom_data": {}},
            "data": {"id": "1", "attributes": base}}  # fmt: skip


def ping(**kw) -> dict:
    base = {"sale_id": "gp1", "sale_timestamp": "2026-11-06T09:12:31Z",
            "email": "ann@example.com", "price": "2900", "currency": "usd", "refunded": "false",
            "test": "false"}  # fmt: skip
    base.update(kw)
    return base


# --- money --------------------------------------------------------------------------------


def test_a_decimal_comma_amount_is_read_as_decimals_not_thousands():
    assert to_minor("29,00", "EUR") == 2900
    assert to_minor("1.234,50", "EUR") == 123450
    assert to_minor("1,234.50", "EUR") == 123450
    assert to_minor("2,900", "JPY") == 2900  # JPY has no decimals: only thousands fit


def test_separators_that_fit_no_reading_or_two_readings_are_errors():
    with pytest.raises(InputError, match=r"'1,2,3' is not an amount"):
        to_minor("1,2,3", "USD")
    with pytest.raises(InputError, match=r"'1\.500' is ambiguous"):
        to_minor("1.500", "EUR")  # 1.50 or 1,500?
    with pytest.raises(InputError, match=r"'1,234' is ambiguous"):
        to_minor("1,234", "KWD")  # KWD has three decimals
    assert to_minor("1.500", "EUR", decimal_comma=True) == 150000
    assert to_minor("29,5", "EUR", decimal_comma=True) == 2950


def test_a_generic_csv_with_decimal_commas_and_the_option(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text(
        "order,email,amount,currency,date\n"
        '1,a@example.com,"29,00",EUR,2026-11-01\n'
        '2,b@example.com,"1,2,3",EUR,2026-11-01\n'
        '3,c@example.com,"1.500",EUR,2026-11-01\n'
    )
    s = imported(run, f, "--format", "csv")
    assert (s["imported"], s["rejected"]) == (1, 2)
    assert s["errors"][0] == {"line": 3, "reason": "amount: '1,2,3' is not an amount"}
    assert s["errors"][1]["line"] == 4 and "--decimal-comma" in s["errors"][1]["reason"]
    assert sales(run)["1"]["amount"] == 2900
    s = imported(run, f, "--format", "csv", "--decimal-comma")
    assert s["imported"] == 1 and sales(run)["3"]["amount"] == 150000


def test_negative_and_boolean_amounts_and_unknown_currencies_are_refused_with_their_line(
    run, tmp_path
):
    f = tmp_path / "hooks.jsonl"
    lines = [
        ping(sale_id="neg", price="-500"),
        stripe_event("checkout.session.completed", session(amount_total=True)),
        lemon(currency="ZZZ"),
        ping(sale_id={"nested": 1}),
        ping(sale_id="ok"),
    ]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = imported(run, f)
    assert s["imported"] == 1 and s["rejected"] == 4
    assert [e["line"] for e in s["errors"]] == [1, 2, 3, 4]
    reasons = [e["reason"] for e in s["errors"]]
    assert reasons[0] == "price '-500' is negative"
    assert reasons[1] == "amount_total True is not whole minor units"
    assert reasons[2] == "currency: 'ZZZ' is not an ISO 4217 currency code"
    assert reasons[3] == "sale_id (an object) is not text"
    assert list(sales(run)) == ["ok"]


def test_a_negative_csv_amount_is_refused():
    with pytest.raises(InputError, match="is negative"):
        from listkit.sales.sales import Columns, generic_row

        generic_row(
            {"order": "1", "amount": "(5.00)", "currency": "USD", "date": "2026-11-01"}, Columns()
        )


T = '"sale_timestamp": "2026-11-06T09:12:31Z"'


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"sale_id": "a", ' + T + ', "price": 1e309}', "price"),
        ('{"sale_id": "a", ' + T + ', "price": "1E+9999999"}', "price"),
        ('{"sale_id": "a", "sale_timestamp": "' + "9" * 20 + '", "price": "1"}', "sale_timestamp"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ('{"sale_id": "a", "sale_timestamp": {"t": 1}, "price": "100"}', "sale_timestamp"),
        ('{"sale_id": "a", ' + T + ', "email": ["x"], "price": "1"}', "email"),
        ('{"sale_id": "a\\ud800", ' + T + ', "price": "1"}', "not valid Unicode"),
        ('{"sale_id": "a", ' + T + ', "price": ' + "1" * 5000 + "}", "longer than 40 digits"),
        ('{"sale_id": "a", ' + T + ', "price": "1", "x": "\\udfff"}', "not valid Unicode"),
    ],
)  # fmt: skip
def test_a_hostile_line_is_one_rejected_row_and_the_rest_are_imported(run, tmp_path, line, reason):
    f = tmp_path / "hooks.jsonl"
    good = json.dumps(ping(sale_id="good"))
    f.write_text(f"{good}\n{line}\n{good.replace('good', 'good2')}\n")
    s = imported(run, f)
    assert (s["imported"], s["rejected"]) == (2, 1)
    assert s["errors"][0]["line"] == 2 and reason in s["errors"][0]["reason"]


def test_a_huge_amount_in_a_csv_is_one_rejected_row(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text(
        "order,email,amount,currency,date\n"
        "1,a@example.com,1E+9999999,USD,2026-11-01\n"
        "2,a@example.com,99999999999999999999999,USD,2026-11-01\n"
        "3,a@example.com,5,USD,99999999999999999999\n"
        "4,a@example.com,5,USD,2026-11-01\n"
    )
    s = imported(run, f, "--format", "csv")
    assert (s["imported"], s["rejected"]) == (1, 3)
    assert [e["line"] for e in s["errors"]] == [2, 3, 4]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["sale_id", "sale_timestamp", "price", "currency", "email", "url_params", "refunded",
     "type", "data", "object", "meta", "attributes", "amount_total", "payment_intent", "id",
     "created", "total", "status", "event_name", "custom_data", "payment_status", "test"]
)  # fmt: skip
_records = st.recursive(
    st.dictionaries(_keys, _json_values, max_size=8),
    lambda children: st.dictionaries(_keys, children | _json_values, max_size=6),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))


def _templates() -> list[dict]:
    charge = {"object": "charge", "id": "ch_1", "payment_intent": "pi_1", "amount": 4900,
              "amount_refunded": 100, "currency": "usd", "created": 1794000000,
              "billing_details": {"email": "a@example.com"}, "metadata": {"lk": "t"}}  # fmt: skip
    return [
        ping(url_params={"lk": "t", "utm_campaign": "c"}),
        ping(**{"url_params[lk]": "t", "is_preorder_authorization": "false"}),
        stripe_event("checkout.session.completed", session(metadata={"coupon": "X"})),
        stripe_event("checkout.session.async_payment_succeeded", session()),
        stripe_event("charge.refunded", charge),
        lemon(status="partial_refund", refunded_amount=100),
    ]


@st.composite
def _mutated(draw):
    """A real payload with one to three fields (at any depth) replaced by anything."""
    import copy

    record = copy.deepcopy(draw(st.sampled_from(_templates())))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(record) if p]))
        target = record
        for key in path[:-1]:
            target = target[key] if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target[path[-1]] = draw(_json_values)
    return record


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_records, _mutated()))
def test_no_json_record_raises_anything_but_a_rejection_or_a_skip(record):
    line = json.dumps(record)
    try:
        sale = one(line)
    except (Skip, InputError):
        return
    assert isinstance(sale.amount, int) and not isinstance(sale.amount, bool)
    assert 0 <= sale.refunded <= sale.amount
    assert isinstance(sale.order_id, str) and sale.order_id


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=25), min_size=5, max_size=5))
def test_no_csv_row_raises_anything_but_a_rejection_or_a_skip(values):
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows([["order", "email", "amount", "currency", "date"], values])
    _fmt, records = parse_file(io.BytesIO(out.getvalue().encode()), fmt="csv")
    for _line, item in records:
        assert isinstance(item, Sale | Skip | InputError)


# --- Gumroad pings --------------------------------------------------------------------------


def test_a_gumroad_ping_price_is_usd_cents_whatever_the_product_currency():
    sale = one(ping(price="1100", currency="eur"))
    assert (sale.amount, sale.currency) == (1100, "USD")
    sale = one(ping(price="1100", currency="jpy"))
    assert (sale.amount, sale.currency) == (1100, "USD")


def test_a_gumroad_pre_order_authorization_is_not_a_charge():
    with pytest.raises(Skip, match="pre-order authorization"):
        one(ping(is_preorder_authorization="true"))


def test_a_file_of_saved_form_encoded_pings_is_recognised(run, tmp_path):
    f = tmp_path / "pings.txt"
    f.write_text(
        urlencode(ping(sale_id="f1")) + "\n" + urlencode(ping(sale_id="f2", email="b@example.com"))
    )
    s = imported(run, f)
    assert (s["format"], s["imported"], s["rejected"]) == ("jsonl", 2, 0)


# --- statuses --------------------------------------------------------------------------------


def test_a_lemon_squeezy_pending_order_is_not_paid():
    with pytest.raises(Skip, match="pending"):
        one(lemon(status="pending"))


def test_a_shopify_expired_order_is_skipped_not_an_error(run, tmp_path):
    f = tmp_path / "orders.csv"
    header = (FIXTURES / "shopify_orders.csv").read_text().splitlines()[0]
    f.write_text(
        header + "\n#2001,z@example.com,expired,,,,no,CAD,10.00,0.00,0.00,10.00,,0.00,,"
        "2026-11-05 11:00:00 -0400,1,Mug,10.00,0.00,558,,Low,web\n"
    )
    s = imported(run, f)
    assert (s["imported"], s["rejected"], s["skipped"]) == (0, 0, {"expired order": 1})


def test_a_stripe_delayed_payment_is_recorded_when_it_succeeds_at_that_time(run, tmp_path):
    f = tmp_path / "hooks.jsonl"
    unpaid = stripe_event("checkout.session.completed", session(payment_status="unpaid"))
    paid = stripe_event("checkout.session.async_payment_succeeded", session(), created=1794100000)
    f.write_text(json.dumps(unpaid) + "\n" + json.dumps(paid) + "\n")
    s = imported(run, f)
    assert (s["imported"], s["skipped"]) == (1, {"payment_status 'unpaid'": 1})
    row = sales(run)["pi_1"]
    # when it was paid (the event), not when checkout began (the session's created)
    assert row["at"] == "2026-11-08T01:06:40+00:00"
    assert (row["amount"], row["currency"]) == (4900, "GBP")


def test_a_stripe_charge_refunded_event_refunds_the_checkout_sale(run, tmp_path):
    f = tmp_path / "hooks.jsonl"
    paid = stripe_event("checkout.session.completed", session())
    charge = {"object": "charge", "id": "ch_9", "payment_intent": "pi_1", "amount": 4900,
              "amount_refunded": 1000, "currency": "gbp", "refunded": False, "status": "succeeded",
              "created": 1794000000, "billing_details": {"email": "jo@example.com"},
              "metadata": {}}  # fmt: skip
    refund = stripe_event("charge.refunded", charge, created=1794200000)
    f.write_text(json.dumps(paid) + "\n" + json.dumps(refund) + "\n")
    s = imported(run, f)
    assert (s["imported"], s["updated"]) == (1, 1)
    row = sales(run)["pi_1"]
    assert (row["refunded"], row["status"]) == (1000, "partially_refunded")
    # an older event replayed afterwards never takes the refund back
    f.write_text(json.dumps(paid) + "\n")
    s = imported(run, f)
    assert s["unchanged"] == 1 and sales(run)["pi_1"]["refunded"] == 1000


def test_the_same_stripe_payment_from_the_csv_and_a_checkout_event_is_one_order(run, tmp_path):
    csv_file = tmp_path / "payments.csv"
    csv_file.write_text(
        "id,Created date (UTC),Amount,Amount Refunded,Currency,Captured,Status,"
        "Customer Email,PaymentIntent ID\n"
        "ch_9,2026-11-03 08:00:00,49.00,0,gbp,true,Paid,jo@example.com,pi_1\n"
        "ch_8,2026-11-03 09:00:00,10.00,0,gbp,true,Paid,al@example.com,pi_2\n"
    )
    hooks = tmp_path / "hooks.jsonl"
    hooks.write_text(json.dumps(stripe_event("checkout.session.completed", session())) + "\n")
    imported(run, csv_file)
    s = imported(run, hooks)
    assert (s["imported"], s["unchanged"] + s["updated"]) == (0, 1)
    assert sorted(sales(run)) == ["pi_1", "pi_2"]
    # the other way round: the event first, then the CSV
    run("sales", "import", str(FIXTURES / "stripe_payments.csv"))  # unrelated rows
    other = tmp_path / "hooks2.jsonl"
    other.write_text(
        json.dumps(
            stripe_event("checkout.session.completed", session(id="cs_3", payment_intent="pi_3"))
        )
        + "\n"
    )
    imported(run, other)
    later = tmp_path / "payments2.csv"
    later.write_text(
        "id,Created date (UTC),Amount,Amount Refunded,Currency,Captured,Status,"
        "Customer Email,PaymentIntent ID\n"
        "ch_7,2026-11-03 08:00:00,49.00,49.00,gbp,true,Refunded,jo@example.com,pi_3\n"
    )
    s = imported(run, later)
    assert (s["imported"], s["updated"]) == (0, 1)
    assert sales(run)["pi_3"]["status"] == "refunded"


# --- siblings: other values and statuses that are not revenue -------------------------------------


def test_sales_add_refuses_a_negative_amount(run):
    result = run(
        "sales", "add", "--order", "M1", "--email", "a@example.com", "--amount", "-5",
        "--currency", "USD", ok=False,
    )  # fmt: skip
    assert result.output == "Error: --amount: '-5' is negative\n"


def test_a_gumroad_chargeback_that_was_lost_is_not_revenue(run, tmp_path):
    text = (FIXTURES / "gumroad_sales.csv").read_text().splitlines()
    header = text[0].split(",")
    g1 = text[1].split(",")
    g1[header.index("Disputed?")] = "1"
    f = tmp_path / "disputed.csv"
    f.write_text(text[0] + "\n" + ",".join(g1) + "\n")
    imported(run, f)
    row = sales(run)["G1"]
    assert (row["status"], row["refunded"]) == ("refunded", 2900)
    g1[header.index("Dispute Won?")] = "1"
    f.write_text(text[0] + "\n" + ",".join(g1) + "\n")
    imported(run, f)
    assert sales(run)["G1"]["refunded"] == 2900  # refunds only grow: a won dispute is re-paid
    sale = one(ping(disputed="true", dispute_won="false"))
    assert (sale.status, sale.refunded) == ("refunded", 2900)


def test_an_unrelated_nested_url_param_does_not_reject_a_gumroad_ping():
    sale = one(ping(url_params={"lk": "abc", "ref": {"deep": [1]}}))
    assert sale.token == "abc"


def test_a_stripe_checkout_without_a_payment_is_skipped_not_rejected():
    with pytest.raises(Skip, match="no payment"):
        free = session(
            mode="setup",
            amount_total=None,
            payment_status="no_payment_required",
            payment_intent=None,
        )
        one(stripe_event("checkout.session.completed", free))


def test_stripe_csv_payments_that_are_incomplete_or_pending_are_not_paid(run, tmp_path):
    f = tmp_path / "payments.csv"
    f.write_text(
        "id,Created date (UTC),Amount,Amount Refunded,Currency,Captured,Status,Customer Email\n"
        "ch_1,2026-11-03 08:00:00,49.00,0,eur,true,Incomplete,a@example.com\n"
        "py_2,2026-11-03 08:00:00,49.00,0,eur,true,Pending,b@example.com\n"
        "ch_3,2026-11-03 08:00:00,49.00,0,eur,true,Paid,c@example.com\n"
    )
    s = imported(run, f)
    assert (s["imported"], s["skipped"]) == (2, {"incomplete payment": 1})
    assert sales(run)["py_2"]["status"] == "pending"


_SHOP_HEADERS = {
    "gumroad": (FIXTURES / "gumroad_sales.csv").read_text().splitlines()[0].split(","),
    "stripe": [
        *(FIXTURES / "stripe_payments.csv").read_text().splitlines()[0].split(","),
        "PaymentIntent ID",
    ],
    "shopify": (FIXTURES / "shopify_orders.csv").read_text().splitlines()[0].split(","),
}
_cells = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "0", "1", "29.0", "-1", "1e309", "1,2,3", "paid", "refunded", "usd",
                     "2026-11-02 10:00:00 UTC", "9" * 20, "Totals", "expired"]),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_SHOP_HEADERS)), st.data())
def test_no_shop_export_row_raises_anything_but_a_rejection_or_a_skip(fmt, data):
    import csv
    import io

    header = _SHOP_HEADERS[fmt]
    row = data.draw(st.lists(_cells, min_size=len(header), max_size=len(header)))
    out = io.StringIO()
    csv.writer(out).writerows([header, row])
    _fmt, records = parse_file(io.BytesIO(out.getvalue().encode()), fmt=fmt)
    for _line, item in records:
        assert isinstance(item, Sale | Skip | InputError)
        if isinstance(item, Sale):
            assert 0 <= item.refunded <= item.amount


@pytest.fixture(scope="module")
def examples_db(tmp_path_factory):
    """One database for every example of the property test below."""
    from listkit.db import open_db

    db = open_db(tmp_path_factory.mktemp("examples") / "sales.db")
    yield db
    db.close()


@settings(max_examples=200, deadline=None)
@given(record=st.one_of(_records, _mutated()))
def test_whatever_a_json_record_holds_storing_it_raises_nothing(examples_db, record):
    from listkit.sales.sales import SalesSummary, parse_one, record_sale, store_records

    db = examples_db
    with db.conn:
        db.execute("DELETE FROM sale_aliases")
        db.execute("DELETE FROM sales")
    item = parse_one(lambda: record_sale(record, "lk"))
    first, again = SalesSummary(file="x"), SalesSummary(file="x")
    store_records(db, [(1, item)], first)
    store_records(db, [(2, item)], again)  # found again by its id: nothing new
    assert first.imported + first.rejected + sum(first.skipped.values()) == 1
    assert again.imported == 0 and again.unchanged == first.imported


def test_a_subscription_checkout_and_its_refunded_charge_are_one_order_through_the_invoice(
    run, tmp_path
):
    first = session(id="cs_sub", payment_intent=None, mode="subscription", invoice="in_1")
    charge = {"object": "charge", "id": "ch_5", "payment_intent": "pi_5", "invoice": "in_1",
              "amount": 4900, "amount_refunded": 4900, "refunded": True, "currency": "gbp",
              "created": 1794000000, "metadata": {}}  # fmt: skip
    f = tmp_path / "hooks.jsonl"
    f.write_text(
        json.dumps(stripe_event("checkout.session.completed", first))
        + "\n"
        + json.dumps(stripe_event("charge.refunded", charge))
        + "\n"
    )
    s = imported(run, f)
    assert (s["imported"], s["updated"]) == (1, 1)
    assert [(r["order"], r["status"]) for r in sales(run).values()] == [("cs_sub", "refunded")]


def test_a_gumroad_sale_from_the_csv_and_its_ping_are_one_order_by_the_order_number(run, tmp_path):
    imported(run, FIXTURES / "gumroad_sales.csv")
    f = tmp_path / "pings.txt"
    # Gumroad's ping carries order_number (external_id_numeric), as the CSV's Order Number
    f.write_text(urlencode(ping(sale_id="OBFUSCATED==", order_number="101", refunded="true")))
    s = imported(run, f)
    assert (s["imported"], s["updated"]) == (0, 1)
    assert sales(run)["G1"]["status"] == "refunded"


def test_a_csv_field_too_large_to_read_is_one_rejected_row(run, tmp_path):
    # over the csv module's field limit, whatever it is set to (imports.py raises it to 1 MB)
    f = tmp_path / "orders.csv"
    f.write_text(
        "order,email,amount,currency,date\n"
        f"1,{'x' * 2_100_000},5,USD,2026-11-01\n"
        "2,a@example.com,5,USD,2026-11-01\n"
    )
    s = imported(run, f, "--format", "csv")
    assert (s["imported"], s["rejected"]) == (1, 1)
    assert s["errors"][0]["line"] == 2 and "too large" in s["errors"][0]["reason"]


def test_a_header_too_large_to_read_is_a_one_line_error(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text("order," + "x" * 2_100_000 + "\n1,2\n")
    result = run("sales", "import", str(f), ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {f}: the header row cannot be read as CSV")


def test_stripe_amounts_in_currencies_whose_stripe_minor_unit_is_not_iso_are_converted():
    # docs.stripe.com/currencies: ISK stays two-decimal in the API (100 = 1 krona),
    # MGA is zero-decimal in the API though ISO 4217 gives it two decimals.
    isk = one(
        stripe_event("checkout.session.completed", session(currency="isk", amount_total=50000))
    )
    assert (isk.amount, isk.currency) == (500, "ISK")
    mga = one(
        stripe_event("checkout.session.completed", session(currency="mga", amount_total=1000))
    )
    assert (mga.amount, mga.currency) == (100000, "MGA")
    with pytest.raises(InputError, match="not whole ISK"):
        one(stripe_event("checkout.session.completed", session(currency="isk", amount_total=50050)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(max_size=60) | st.builds(urlencode, st.dictionaries(_keys, st.text(max_size=8))),
        min_size=1,
        max_size=4,
    )
)
def test_no_line_of_a_json_lines_file_raises_anything_but_a_rejection_or_a_skip(lines):
    import io

    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    try:
        _fmt, records = parse_file(io.BytesIO(body), fmt="jsonl")
    except InputError:
        return  # not UTF-8, or empty: the whole file is refused with one line
    for _line, item in records:
        assert isinstance(item, Sale | Skip | InputError)


def test_a_lemon_squeezy_partial_refund_is_honoured_whatever_the_status_says():
    # docs.lemonsqueezy.com/api/orders/issue-refund: after a partial refund the order
    # stays status "paid", refunded false, with refunded_amount set
    sale = one(lemon(status="paid", refunded=False, total=1199, refunded_amount=100))
    assert (sale.status, sale.refunded) == ("partially_refunded", 100)
    sale = one(lemon(status="partial_refund", total=1199, refunded_amount=100))
    assert (sale.status, sale.refunded) == ("partially_refunded", 100)
    sale = one(lemon(status="refunded", refunded=True, total=1199, refunded_amount=1199))
    assert (sale.status, sale.refunded) == ("refunded", 1199)


def test_a_lemon_squeezy_test_mode_order_is_not_revenue_wherever_it_says_so():
    with pytest.raises(Skip, match="test mode"):
        one(lemon(test_mode=True))  # the order object's own attribute
    payload = lemon()
    payload["meta"]["test_mode"] = True  # the webhook's meta
    with pytest.raises(Skip, match="test mode"):
        one(payload)


def test_an_unknown_currency_option_is_one_error_not_a_rejection_per_row(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text("order,amount,date\n1,5,2026-11-01\n2,6,2026-11-01\n")
    result = run("sales", "import", str(f), "--format", "csv", "--currency", "ZZZ", ok=False)
    assert result.output == f"Error: {f}: --currency: 'ZZZ' is not an ISO 4217 currency code\n"


@pytest.mark.parametrize("text", ["£", "$", "€ ", "", "-", "+", "()", "-£"])
def test_an_amount_without_digits_is_not_an_amount(text):
    with pytest.raises(InputError, match="is not an amount"):
        to_minor(text, "GBP")


# --- amounts and times are ASCII digits -------------------------------------------------------

# Python's int() and Decimal() read these as 3, 12, 5, 3 and 1794000000.
NOT_ASCII_DIGITS = ["٣", "１２", "٣.٥٠", "۳", "29.٥٠", "१२"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_an_amount_in_digits_other_than_ascii_is_not_an_amount(text):
    with pytest.raises(InputError, match="is not an amount"):
        to_minor(text, "USD")


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_an_amount_in_digits_other_than_ascii_is_a_rejected_row_in_every_importer(
    run, tmp_path, text
):
    gumroad = tmp_path / "gumroad.jsonl"
    gumroad.write_text(json.dumps(ping(sale_id="g1", price=text)) + "\n")
    generic = tmp_path / "orders.csv"
    generic.write_text(
        "order,email,amount,currency,date,refunded\n"
        f"1,a@example.com,{text},USD,2026-11-01,\n"
        f"2,a@example.com,5,USD,2026-11-01,{text}\n"
    )
    own = tmp_path / "own.jsonl"
    own_sale = {"order_id": "o1", "amount": text, "currency": "EUR", "at": "2026-11-07"}
    own.write_text(json.dumps(own_sale) + "\n")
    assert imported(run, gumroad)["rejected"] == 1
    assert imported(run, generic, "--format", "csv")["rejected"] == 2
    assert run("sales", "add", "--order", "m1", "--email", "a@example.com", "--amount", text,
               "--currency", "USD", ok=False).exit_code == 1  # fmt: skip
    assert sales(run) == {}


def test_a_unix_time_in_digits_other_than_ascii_is_not_a_time():
    with pytest.raises(InputError, match="sale_timestamp"):
        one(ping(sale_timestamp="١٧٩٤٠٠٠٠٠٠"))


# --- errors name the line and the field, never a buyer ------------------------------------------

BUYER = "ann.buyer@example.com"


def test_no_error_of_a_sales_import_quotes_a_buyer_or_echoes_a_record(run, tmp_path):
    unclaimed = tmp_path / "pings.txt"  # a saved form body that is no Gumroad ping
    unclaimed.write_text(f"email={BUYER.replace('@', '%40')}&price=100&name=Ann+Buyer\n")
    result = run("sales", "import", str(unclaimed), ok=False)
    assert result.exit_code == 1 and "pings.txt" in result.output
    assert "ann.buyer" not in result.output and "Ann" not in result.output
    lines = [
        {"type": {"email": BUYER}, "data": {}},
        stripe_event("checkout.session.completed", session(created=BUYER), created=None),
        stripe_event("checkout.session.completed", session(payment_status={"by": BUYER})),
        ping(price=BUYER),
        ping(sale_timestamp=BUYER),
        ping(sale_id=[BUYER]),
        lemon(status=BUYER),
        lemon(currency=BUYER),
        {"buyer": BUYER, "total": 5},
    ]
    f = tmp_path / "hooks.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run("sales", "import", str(f))
    assert "ann.buyer" not in result.output
    assert "1 skipped (1 payment_status (an object))" in result.output
    assert [line for line in result.output.splitlines() if "hooks.jsonl, line" in line] == [
        f"  {f}, line {n}: {reason}"
        for n, reason in [
            (1, "type (an object) is not text"),
            (2, "created (an address) is not a date and time"),
            (4, "price (an address) is not whole cents"),
            (5, "sale_timestamp (an address) is not a date and time"),
            (6, "sale_id (a list) is not text"),
            (7, "status (an address) is not one listkit knows"),
            (8, "currency: (an address) is not a 3-letter currency code"),
            (9, "not a Gumroad ping, Stripe event or Lemon Squeezy order"),
        ]
    ]
    csv_file = tmp_path / "orders.csv"
    csv_file.write_text(
        f"order,email,amount,currency,date\n1,{BUYER},{BUYER},USD,2026-11-01\n"
        f"2,{BUYER},5,USD,{BUYER}\n3,{BUYER},5,{BUYER},2026-11-01\n"
    )
    result = run("sales", "import", str(csv_file), "--format", "csv")
    assert result.output.count("line") == 3 and "ann.buyer" not in result.output
