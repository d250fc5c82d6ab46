"""Sales imports and `sales add/ls`, on fixtures in each real shape (see FORMATS.md)."""

import csv
import io
import json
import re
from pathlib import Path

import pytest

from listkit.sales.money import format_amounts, format_minor, to_minor

FIXTURES = Path(__file__).parent / "fixtures" / "sales"


def imported(run, name_or_path, *args, ok=True):
    path = name_or_path if isinstance(name_or_path, Path) else FIXTURES / name_or_path
    result = run("sales", "import", str(path), "--json", *args, ok=ok)
    return json.loads(result.output) if ok else result


def report(run, *args):
    return json.loads(run("report", "--json", *args).output)


# --- pure rules ---------------------------------------------------------------------------


def test_money_is_parsed_to_minor_units_without_floats():
    assert to_minor("29.0", "USD") == 2900
    assert to_minor("1,049.50", "usd") == 104950
    assert to_minor("1500", "JPY") == 1500
    assert to_minor("1.234", "KWD") == 1234
    assert format_minor(104950, "USD") == "USD 1,049.50"
    with pytest.raises(Exception, match="has more decimals than JPY allows"):
        to_minor("10.5", "JPY")


# --- imports ------------------------------------------------------------------------------


def test_gumroad_csv_totals_row_refunds_and_bad_rows(run):
    s = imported(run, "gumroad_sales.csv")
    assert (s["format"], s["imported"], s["skipped"], s["rejected"]) == (
        "gumroad",
        3,
        {"totals row": 1, "not a charge (free trial or pre-order authorization)": 1},
        2,
    )
    assert s["errors"] == [
        {"line": 5, "reason": "Sale Price ($): 'twenty' is not an amount"},
        {
            "line": 6,
            "reason": "Purchase Time (UTC timezone) 'yesterday 10:00:00 UTC' is not a date "
            "and time",
        },
    ]
    rows = {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert (rows["G1"]["amount"], rows["G1"]["refunded"], rows["G1"]["status"]) == (2900, 0, "paid")
    assert rows["G1"]["at"] == "2026-11-02T10:00:00+00:00"
    assert rows["G2"]["at"] == "2026-11-02T10:05:00+00:00"  # the '+0000' spelling
    assert (rows["G2"]["refunded"], rows["G2"]["status"]) == (2900, "refunded")
    assert (rows["G3"]["amount"], rows["G3"]["refunded"]) == (2030, 530)
    totals = report(run)["totals"]
    assert totals["revenue"] == {"USD": 2900 + 1500}  # G2 fully refunded, G3 partly
    assert totals["orders"] == 2


def test_reimport_changes_nothing_and_a_later_export_updates_refunds(run, tmp_path):
    imported(run, "gumroad_sales.csv")
    before = report(run)
    again = imported(run, "gumroad_sales.csv")
    assert (again["imported"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert report(run) == before
    later = tmp_path / "later.csv"
    text = (FIXTURES / "gumroad_sales.csv").read_text()
    lines = text.splitlines()
    lines[1] = lines[1].replace(",0,0.0,0,", ",1,0.0,1,", 1)  # G1: Refunded? 1, Fully Refunded? 1
    later.write_text("\n".join(lines) + "\n")
    s = imported(run, later)
    assert (s["imported"], s["updated"]) == (0, 1)
    assert report(run)["totals"]["revenue"] == {"USD": 1500}


def test_stripe_csv_skips_failed_and_keeps_currencies_apart(run):
    s = imported(run, "stripe_payments.csv")
    assert (s["format"], s["imported"], s["skipped"]) == ("stripe", 2, {"failed payment": 1})
    assert report(run)["totals"]["revenue"] == {"EUR": 4900, "USD": 100000}


def test_older_stripe_export_refunds_without_amount_and_other_exponents(run):
    s = imported(run, "stripe_payments_older.csv")
    assert (s["format"], s["imported"], s["rejected"]) == ("stripe", 3, 1)
    assert s["errors"] == [
        {"line": 4, "reason": "Created (UTC) '03/11/2026 nonsense' is not a date and time"}
    ]
    rows = {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert (rows["py_1"]["status"], rows["py_1"]["refunded"]) == ("refunded", 2900)
    assert (rows["py_2"]["currency"], rows["py_2"]["amount"]) == ("JPY", 2900)
    assert (rows["py_4"]["currency"], rows["py_4"]["amount"]) == ("KWD", 9999)
    assert report(run)["totals"]["revenue"] == {"JPY": 2900, "KWD": 9999}


def test_shopify_multi_line_orders_are_one_sale(run):
    s = imported(run, "shopify_orders.csv")
    assert (s["imported"], s["skipped"]) == (2, {"line item": 1, "voided order": 1})
    rows = {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert rows["#1001"]["amount"] == 6000 and rows["#1001"]["at"] == "2026-11-04T13:12:31+00:00"
    assert (rows["#1002"]["refunded"], rows["#1002"]["status"]) == (1500, "partially_refunded")


def test_webhook_payloads_in_json_lines(run):
    s = imported(run, "webhooks.jsonl")
    assert (s["format"], s["imported"], s["skipped"], s["rejected"]) == (
        "jsonl",
        3,
        {"test purchase": 1},
        1,
    )
    assert s["errors"][0]["line"] == 5
    rows = {r["source"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert (rows["stripe"]["currency"], rows["stripe"]["amount"]) == ("GBP", 4900)
    assert (rows["lemonsqueezy"]["order"], rows["lemonsqueezy"]["amount"]) == ("9001", 1500)


def test_later_webhooks_update_refunds_and_bad_payloads_are_reported(run):
    imported(run, "webhooks.jsonl")
    s = imported(run, "webhooks_later.jsonl")
    assert (s["imported"], s["updated"], s["skipped"], s["rejected"]) == (
        1,
        1,
        {"payment_status 'unpaid'": 1},
        1,
    )
    assert s["errors"] == [{"line": 3, "reason": "price '29.5' is not whole cents"}]
    rows = {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert (rows["9001"]["status"], rows["9001"]["refunded"]) == ("refunded", 1500)
    assert (rows["gp3"]["coupon"], rows["gp3"]["amount"]) == ("LAUNCH30", 4900)
    assert report(run)["totals"]["revenue"] == {"USD": 2900 + 4900, "GBP": 4900}


def test_import_from_stdin_and_the_human_summary(run):
    text = (FIXTURES / "gumroad_sales.csv").read_text()
    out = run("sales", "import", "-", input=text).output
    assert out.splitlines() == [
        "<stdin> (gumroad): 3 imported, 0 updated, 0 unchanged, 2 skipped (1 not a charge "
        "(free trial or pre-order authorization), 1 totals row), 2 rejected",
        "attributed: 3 by none",
        "  <stdin>, line 5: Sale Price ($): 'twenty' is not an amount",
        "  <stdin>, line 6: Purchase Time (UTC timezone) 'yesterday 10:00:00 UTC' is not a date "
        "and time",
    ]


def test_sales_ls_shows_what_was_paid(run):
    imported(run, "stripe_payments.csv")
    lines = run("sales", "ls").output.splitlines()
    assert lines[0].split() == [
        "source", "order", "at", "email", "paid", "status", "method", "campaign", "list"
    ]  # fmt: skip
    assert "USD 1,000.00" in lines[2] and "partially_refunded" in lines[2]
    assert format_amounts({"USD": 100000, "EUR": 4900}) == "EUR 49.00, USD 1,000.00"


def test_generic_csv_with_column_options(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text(
        "Order #,Buyer,Paid,When\n7,a@example.com,12.50,2026-11-01\n8,b@example.com,x,2026-11-01\n"
    )
    s = imported(
        run,
        f,
        "--format",
        "csv",
        "--order-column",
        "Order #",
        "--email-column",
        "Buyer",
        "--amount-column",
        "Paid",
        "--date-column",
        "When",
        "--currency",
        "EUR",
    )
    assert (s["imported"], s["rejected"]) == (1, 1)
    assert s["errors"] == [{"line": 3, "reason": "Paid: 'x' is not an amount"}]
    result = imported(run, f, "--format", "csv", ok=False)
    assert "the header lacks 'order', 'amount', 'date', 'currency'" in result.output


def test_sales_add_and_unknown_format(run, tmp_path):
    out = run(
        "sales",
        "add",
        "--order",
        "M1",
        "--email",
        "a@example.com",
        "--amount",
        "29.00",
        "--currency",
        "usd",
    ).output
    assert out == "Sale M1 added: USD 29.00, attributed by none.\n"
    result = run(
        "sales",
        "add",
        "--order",
        "M2",
        "--email",
        "a@example.com",
        "--amount",
        "2x",
        "--currency",
        "USD",
        ok=False,
    )
    assert result.output == "Error: --amount: '2x' is not an amount\n"
    result = run(
        "sales", "add", "--order", "M2", "--email", "a@example.com", "--amount", "2",
        "--currency", "dollars", ok=False,
    )  # fmt: skip
    assert result.output == "Error: --currency: 'dollars' is not a 3-letter currency code\n"
    result = run("report", "--json", "--csv", ok=False)
    assert result.exit_code == 2 and "use one of --json, --csv and --html" in result.output
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert "the file is empty" in imported(run, empty, ok=False).output


def test_sales_ls_shows_every_time_in_one_format(run):
    # A shop's fractional seconds, a Unix time and "now" came out as three formats.
    add = ("sales", "add", "--email", "ann@example.com", "--amount", "29", "--currency", "USD")
    run(*add, "--order", "1", "--at", "2026-11-02T10:00:00.250Z")
    run(*add, "--order", "2", "--at", "1762077600")
    run(*add, "--order", "3")
    one = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
    table = run("sales", "ls").output.splitlines()
    at = table[0].index(" at ") + 1
    shown = [line[at:].split()[0] for line in table[1:]]
    assert shown[:2] == ["2025-11-02T10:00:00+00:00", "2026-11-02T10:00:00+00:00"]
    assert one.fullmatch(shown[2])
    rows = json.loads(run("sales", "ls", "--json").output)
    assert all(one.fullmatch(r["at"]) for r in rows)
    csv_rows = list(csv.DictReader(io.StringIO(run("sales", "ls", "--csv").output)))
    assert [r["at"] for r in csv_rows] == [r["at"] for r in rows]
