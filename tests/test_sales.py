"""Sales imports, attribution and reports, on fixtures in each real shape."""

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from listkit.attribution import Touch, decide, in_window, last_touch
from listkit.money import format_minor, to_minor
from listkit.reports import lift, per_thousand
from listkit.workspace import Workspace
from tests import smtp_server
from tests.test_send import setup_campaign

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


def touch(i, campaign=1, sent="2026-11-01T10:00:00+00:00", days=7):
    return Touch(
        delivery_id=i, campaign_id=campaign, list_id=10 + i, sent_at=sent, attribution_days=days
    )


def test_token_beats_coupon_beats_email():
    at = "2026-11-02T10:00:00+00:00"
    everything = dict(
        by_token=touch(1),
        by_personal_coupon=touch(2),
        by_campaign_coupon=(3, [touch(4, campaign=3)]),
        buyer_touches=[touch(5)],
    )
    assert decide(at, **everything).method == "token"
    assert decide(at, **{**everything, "by_token": None}).delivery_id == 2
    a = decide(at, **{**everything, "by_token": None, "by_personal_coupon": None})
    assert (a.method, a.campaign_id, a.delivery_id) == ("coupon", 3, 4)
    a = decide(at, buyer_touches=[touch(5)])
    assert (a.method, a.delivery_id) == ("email", 5)
    assert decide(at).method == "none"


def test_email_window_and_last_touch():
    assert in_window("2026-11-08T10:00:00+00:00", "2026-11-01T10:00:00+00:00", 7)
    assert not in_window("2026-11-08T10:00:01+00:00", "2026-11-01T10:00:00+00:00", 7)
    assert not in_window("2026-11-01T09:59:59+00:00", "2026-11-01T10:00:00+00:00", 7)
    older, newer = (
        touch(1, sent="2026-11-01T10:00:00+00:00"),
        touch(2, sent="2026-11-03T10:00:00+00:00"),
    )
    assert last_touch("2026-11-04T00:00:00+00:00", [older, newer]) == newer
    assert last_touch("2026-11-02T00:00:00+00:00", [older, newer]) == older


def test_lift_and_revenue_per_thousand():
    result = lift(1000, 50, 100, 2)
    assert result["difference"] == pytest.approx(0.03)
    low, high = result["ci95"]
    assert low < 0.03 < high
    assert per_thousand({"USD": 2900, "EUR": 100}, 3) == {"USD": 966667, "EUR": 33333}


# --- imports ------------------------------------------------------------------------------


def test_gumroad_csv_totals_row_refunds_and_bad_rows(run):
    s = imported(run, "gumroad_sales.csv")
    assert (s["format"], s["imported"], s["skipped"], s["rejected"]) == (
        "gumroad",
        3,
        {"totals row": 1},
        2,
    )
    assert s["errors"] == [
        {"line": 5, "reason": "Sale Price ($): 'twenty' is not an amount"},
        {"line": 6, "reason": "Purchase Date 'yesterday 10:00:00' is not a date and time"},
    ]
    rows = {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}
    assert (rows["G1"]["amount"], rows["G1"]["refunded"], rows["G1"]["status"]) == (2900, 0, "paid")
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
    lines[1] = lines[1].replace(",0,,0,", ",1,,1,", 1)  # G1: Refunded? 1 ... Fully Refunded? 1
    later.write_text("\n".join(lines) + "\n")
    s = imported(run, later)
    assert (s["imported"], s["updated"]) == (0, 1)
    assert report(run)["totals"]["revenue"] == {"USD": 1500}


def test_stripe_csv_skips_failed_and_keeps_currencies_apart(run):
    s = imported(run, "stripe_payments.csv")
    assert (s["format"], s["imported"], s["skipped"]) == ("stripe", 2, {"failed payment": 1})
    assert report(run)["totals"]["revenue"] == {"EUR": 4900, "USD": 100000}


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
    assert result.output == "Error: '2x' is not an amount\n"
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert "the file is empty" in imported(run, empty, ok=False).output


# --- attribution end to end ------------------------------------------------------------------


@pytest.fixture
def sent_campaign(run, workspace):
    """Campaign t sent to blog (a, b, c) and shop (d), with holdout 0, through a real server."""
    controller, _handler = smtp_server.start()
    try:
        setup_campaign(
            run,
            workspace,
            controller.port,
            ["a@example.com", "b@example.com", "c@example.com"],
            lists=("blog", "shop"),
        )
        run("subscribers", "add", "d@example.com", "--list", "shop")
        run("lists", "create", "dormant")
        run("subscribers", "add", "z@example.com", "--list", "dormant")
        run("send", "t", "--yes")
    finally:
        controller.stop()
    ws = Workspace(workspace)
    ws.db.execute("UPDATE deliveries SET sent_at = '2026-11-01T10:00:00+00:00'")
    ws.db.execute("UPDATE campaigns SET started = '2026-11-01T09:59:00+00:00', coupon = 'LAUNCH30'")
    deliveries = {
        email: dict(zip(("id", "token", "coupon"), rest, strict=True))
        for email, *rest in ws.db.execute("SELECT email, id, token, coupon FROM deliveries")
    }
    ws.close()
    return deliveries


def sales_by_order(run):
    return {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}


def test_attribution_order_and_window_end_to_end(run, sent_campaign, tmp_path):
    d = sent_campaign
    f = tmp_path / "s.csv"
    f.write_text(
        "order,email,amount,currency,date,coupon,token\n"
        # token of a's delivery, bought by someone else with the campaign coupon
        f"1,x@example.com,29,USD,2026-11-02T10:00:00Z,LAUNCH30,{d['a@example.com']['token']}\n"
        # b's personal coupon, bought from another address
        f"2,y@example.com,29,USD,2026-11-02T10:00:00Z,{d['b@example.com']['coupon']},\n"
        # campaign coupon, bought by d: the coupon names the campaign, d's delivery the list
        "3,d@example.com,29,USD,2026-11-02T10:00:00Z,launch30,\n"
        # c buys within the window, no token or coupon: email
        "4,C@Example.com,29,EUR,2026-11-05T10:00:00Z,,\n"
        # c buys again after the 7-day window: not attributed
        "5,c@example.com,29,EUR,2026-11-09T10:00:00Z,,\n"
        # a stranger
        "6,stranger@example.com,10,USD,2026-11-02T10:00:00Z,,\n"
    )
    s = imported(run, f)
    assert s["attributed"] == {"token": 1, "coupon": 2, "email": 1, "none": 2}
    rows = sales_by_order(run)
    assert (rows["1"]["method"], rows["1"]["list"]) == ("token", "blog")
    assert (rows["2"]["method"], rows["2"]["list"]) == ("coupon", "blog")
    assert (rows["3"]["method"], rows["3"]["list"], rows["3"]["campaign"]) == (
        "coupon",
        "shop",
        "t",
    )
    assert (rows["4"]["method"], rows["4"]["list"]) == ("email", "blog")
    assert rows["5"]["method"] == "none"
    assert rows["6"]["method"] == "none"
    # Deterministic: attributing again gives the same answer.
    assert (
        run("sales", "attribute").output
        == "6 sales: 1 by token, 2 by coupon, 1 by email, 2 by none\n"
    )
    assert sales_by_order(run) == rows

    by_list = {r["list"]: r for r in report(run)["rows"]}
    assert by_list["blog"]["revenue"] == {"USD": 5800, "EUR": 2900}
    assert by_list["blog"]["orders"] == 3 and by_list["blog"]["sent"] == 3
    assert by_list["blog"]["revenue_per_1000"] == {"USD": 1933333, "EUR": 966667}
    assert by_list["blog"]["methods"] == {"token": 1, "coupon": 1, "email": 1}
    assert by_list["shop"]["revenue"] == {"USD": 2900}
    data = report(run)
    assert data["lists_without_revenue"] == [{"list": "dormant", "active": 1, "sent": 0}]
    assert data["totals"]["unattributed"]["revenue"] == {"EUR": 2900, "USD": 1000}
    by_campaign = report(run, "--by", "campaign")["rows"]
    assert [(r["campaign"], r["sent"], r["orders"]) for r in by_campaign] == [("t", 4, 4)]
    by_offer = report(run, "--by", "offer")["rows"]
    assert by_offer[0]["offer"] == "launch"
    # A period that ends before the sales: no revenue.
    early = report(run, "--until", "2026-10-31")
    assert early["totals"]["revenue"] == {}


def test_unsubscribe_and_bounce_caused_by_a_campaign_are_counted(run, workspace, sent_campaign):
    ws = Workspace(workspace)
    cid = ws.db.execute("SELECT id FROM campaigns").fetchone()[0]
    from listkit.subscribers import unsubscribe
    from listkit.suppressions import suppress

    unsubscribe(ws.db, "a@example.com", campaign_id=cid)
    suppress(ws.db, "b@example.com", "hard_bounce", campaign_id=cid)
    ws.close()
    blog = {r["list"]: r for r in report(run)["rows"]}["blog"]
    assert (blog["unsubscribed"], blog["bounced"]) == (1, 1)


def test_report_csv_and_table(run, sent_campaign, tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("order,email,amount,currency,date\n1,a@example.com,29,USD,2026-11-02T10:00:00Z\n")
    imported(run, f)
    table = run("report").output
    assert "blog" in table and "USD 29.00" in table
    assert "Lists with subscribers and no revenue: dormant (1 active), shop (1 active)" in table
    lines = run("report", "--csv").output.splitlines()
    assert lines[0].startswith(
        "list,audience,sent,failed,unsubscribed,bounced,orders,currency,revenue"
    )
    assert any(line.startswith("blog,3,3,0,0,0,1,USD,2900") for line in lines)
    result = run("report", "--since", "nope", ok=False)
    assert result.output == "Error: --since 'nope' is not a date such as 2026-11-01\n"


def test_holdout_lift_is_reported(run, workspace):
    controller, _handler = smtp_server.start()
    try:
        people = [f"h{i}@example.com" for i in range(40)]
        setup_campaign(run, workspace, controller.port, people, extra="holdout = 0.3\n")
        run("send", "t", "--yes")
    finally:
        controller.stop()
    ws = Workspace(workspace)
    started = ws.db.execute("SELECT started FROM campaigns").fetchone()[0]
    groups = dict(ws.db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
    held = [e for (e,) in ws.db.execute("SELECT email FROM deliveries WHERE state = 'held_out'")]
    mailed = [e for (e,) in ws.db.execute("SELECT email FROM deliveries WHERE state = 'sent'")]
    ws.close()
    f = workspace / "s.csv"
    at = (datetime.fromisoformat(started) + timedelta(hours=1)).isoformat()
    f.write_text(
        "order,email,amount,currency,date\n"
        + "".join(f"m{i},{e},10,USD,{at}\n" for i, e in enumerate(mailed[:4]))
        + f"h0,{held[0]},10,USD,{at}\n"
    )
    imported(run, f)
    (h,) = report(run)["holdout"]
    assert (h["mailed"], h["mailed_buyers"]) == (groups["sent"], 4)
    assert (h["held_out"], h["held_out_buyers"]) == (groups["held_out"], 1)
    assert h["difference"] == pytest.approx(4 / groups["sent"] - 1 / groups["held_out"])
    assert "Lift of t: mailed" in run("report").output


def test_html_report_draws_the_json_figures(run, sent_campaign, tmp_path):
    f = tmp_path / "s.csv"
    f.write_text(
        "order,email,amount,currency,date\n"
        "1,a@example.com,29,USD,2026-11-02T10:00:00Z\n"
        "2,d@example.com,49,USD,2026-11-03T10:00:00Z\n"
        "3,b@example.com,5,EUR,2026-11-03T10:00:00Z\n"
    )
    imported(run, f)
    out = tmp_path / "r.html"
    assert run("report", "--html", str(out)).output == f"Wrote {out}.\n"
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    data = report(run)
    chart = re.search(r'<svg id="revenue-by-list".*?</svg>', html, re.S).group(0)
    bars = {
        label: int(value)
        for label, value in re.findall(r'data-label="([^"]+)" data-value="(\d+)"', chart)
    }
    expected = {r["list"]: r["revenue"].get("USD", 0) for r in data["rows"]}
    assert bars == expected
    per_k = re.search(r'<svg id="per-1000-by-list".*?</svg>', html, re.S).group(0)
    bars = {
        label: int(v) for label, v in re.findall(r'data-label="([^"]+)" data-value="(\d+)"', per_k)
    }
    assert bars == {r["list"]: r["revenue_per_1000"].get("USD", 0) for r in data["rows"]}
    embedded = json.loads(
        re.search(r'<script type="application/json" id="listkit-report">(.*?)</script>', html, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert embedded["report"] == data
    assert "also earned in EUR" in html


def test_unsubscribe_link_is_verified_and_counted_against_its_campaign(
    run, workspace, sent_campaign
):
    from listkit.config import load_settings
    from listkit.tracking import unsubscribe_url

    settings = load_settings(workspace)
    url = unsubscribe_url(
        settings.public_base_url(), settings.secret_key(), sent_campaign["a@example.com"]["token"]
    )
    bad = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    result = run("unsubscribe", bad, ok=False)
    assert result.output == (
        "Error: the link's signature does not match LISTKIT_SECRET: not a link we sent\n"
    )
    out = run("unsubscribe", url).output
    assert out.startswith("Unsubscribed a@example.com from blog.")
    supp = json.loads(run("suppress", "ls", "--json").output)
    assert [(s["email"], s["reason"], s["campaign"]) for s in supp] == [
        ("a@example.com", "unsubscribed", "t")
    ]
    blog = {r["list"]: r for r in report(run)["rows"]}["blog"]
    assert blog["unsubscribed"] == 1
