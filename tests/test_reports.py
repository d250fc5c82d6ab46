"""Reports: figures per list, offer and campaign; table, CSV, JSON and HTML output; holdout."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from listkit.audience.suppressions import suppress
from listkit.sales.attribution import attribute_all
from listkit.sales.reports import BY, build_report, build_reports, lift, per_thousand
from tests.world import World, tokens


def report(run, *args):
    return json.loads(run("report", "--json", *args).output)


def sales(run, tmp_path: Path, text: str) -> dict:
    f = tmp_path / "sales.csv"
    f.write_text("order,email,amount,currency,date,coupon,utm_campaign,utm_content\n" + text)
    return json.loads(run("sales", "import", str(f), "--json").output)


# --- pure ---------------------------------------------------------------------------------


def test_revenue_per_thousand_sent_is_rounded_per_currency():
    assert per_thousand({"USD": 2900, "EUR": 100}, 3) == {"USD": 966667, "EUR": 33333}
    assert per_thousand({"JPY": 1500}, 2000) == {"JPY": 750}
    assert per_thousand({"USD": 2900}, 0) == {}


def test_lift_is_the_difference_of_purchase_rates_with_a_95_percent_interval():
    result = lift(1000, 50, 100, 2)
    assert (result["mailed_rate"], result["held_out_rate"]) == (0.05, 0.02)
    assert result["difference"] == pytest.approx(0.03)
    low, high = result["ci95"]
    assert low < 0.03 < high
    assert lift(10, 1, 0, 0)["ci95"] is None


@pytest.mark.parametrize(
    "mailed, mailed_buyers, held, held_buyers, expected",
    [
        # Newcombe (1998), "Interval estimation for the difference between
        # independent proportions", Statistics in Medicine 17, table II, method 10.
        (70, 56, 80, 48, (0.0524, 0.3339)),
        (10, 9, 10, 3, (0.1705, 0.8090)),
        (7, 6, 7, 2, (0.0582, 0.8062)),
        (56, 5, 29, 0, (-0.0381, 0.1926)),
        (10, 0, 20, 0, (-0.1611, 0.2775)),
        (10, 10, 20, 0, (0.6791, 1.0)),
    ],
)
def test_lift_interval_matches_newcombes_published_score_intervals(
    mailed, mailed_buyers, held, held_buyers, expected
):
    low, high = lift(mailed, mailed_buyers, held, held_buyers)["ci95"]
    assert (round(low, 4), round(high, 4)) == expected


def test_a_held_out_group_without_buyers_still_gets_an_honest_interval():
    # The normal approximation gave +0.00% to +0.00% when nobody bought, and a
    # falsely narrow interval whenever the small held-out group had no buyer.
    low, high = lift(47, 0, 8, 0)["ci95"]
    assert low < -0.05 and high > 0.05
    low, high = lift(47, 5, 8, 0)["ci95"]
    assert low < 0 < high  # 5 of 47 against 0 of 8 proves nothing yet


# --- figures ------------------------------------------------------------------------------


@pytest.fixture
def shop(ws):
    """Two campaigns: t (offer launch, coupon LAUNCH30) to blog and shop, u (offer course)
    to blog; a dormant list with members and no sends."""
    w = World(ws.db)
    t = w.campaign("t", coupon="LAUNCH30")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        w.deliver(t, email, "blog")
    w.deliver(t, "f@example.com", "blog", state="failed", code=550)
    w.deliver(t, "d@example.com", "shop")
    u = w.campaign("u", offer="course", started="2026-11-10T10:00:00+00:00")
    w.deliver(u, "a@example.com", "blog", sent_at="2026-11-10T10:00:00+00:00")
    w.deliver(u, "b@example.com", "blog", sent_at="2026-11-10T10:00:00+00:00")
    w.list("dormant", "z1@example.com", "z2@example.com")
    w.list("dormant", "gone@example.com", status="unsubscribed")
    return w


SALES = (
    "1,a@example.com,29,USD,2026-11-02T10:00:00Z,,,\n"  # t, blog, email
    "2,b@example.com,1500,JPY,2026-11-03T10:00:00Z,,,\n"  # t, blog, email, yen
    "3,d@example.com,49.50,USD,2026-11-03T10:00:00Z,,,\n"  # t, shop, email
    "4,new@example.com,29,USD,2026-11-04T10:00:00Z,LAUNCH30,,\n"  # t, no list: coupon only
    "5,a@example.com,99,EUR,2026-11-11T10:00:00Z,,,\n"  # u, blog, email
    "6,stranger@example.com,10,USD,2026-11-11T10:00:00Z,,,\n"  # unattributed
)


def test_report_by_list_keeps_currencies_apart_and_names_lists_without_revenue(run, shop, tmp_path):
    s = sales(run, tmp_path, SALES)
    assert s["attributed"] == {"coupon": 1, "email": 4, "none": 1}
    data = report(run)
    rows = {r["list"]: r for r in data["rows"]}
    assert list(rows) == ["(no list)", "blog", "dormant", "shop"]
    blog = rows["blog"]
    assert {k: blog[k] for k in ("audience", "sent", "failed", "orders")} == {
        "audience": 4,
        "sent": 5,
        "failed": 1,
        "orders": 3,
    }
    assert blog["revenue"] == {"USD": 2900, "JPY": 1500, "EUR": 9900}
    assert blog["revenue_per_1000"] == {"USD": 580000, "JPY": 300000, "EUR": 1980000}
    assert blog["conversion_rate"] == pytest.approx(3 / 5)
    assert blog["methods"] == {"email": 3}
    assert (rows["shop"]["revenue"], rows["shop"]["sent"]) == ({"USD": 4950}, 1)
    assert rows["(no list)"]["revenue"] == {"USD": 2900}
    assert rows["(no list)"]["methods"] == {"coupon": 1}
    assert rows["dormant"]["audience"] == 2 and rows["dormant"]["revenue"] == {}
    assert data["lists_without_revenue"] == []
    assert data["lists_not_mailed"] == [{"list": "dormant", "active": 2, "sent": 0}]
    assert data["totals"] == {
        "orders": 6,
        "revenue": {"USD": 2900 + 4950 + 2900 + 1000, "JPY": 1500, "EUR": 9900},
        "unattributed": {"orders": 1, "revenue": {"USD": 1000}},
    }


def test_report_by_campaign_and_by_offer(run, shop, tmp_path):
    sales(run, tmp_path, SALES)
    rows = {r["campaign"]: r for r in report(run, "--by", "campaign")["rows"]}
    assert (rows["t"]["audience"], rows["t"]["sent"], rows["t"]["failed"]) == (5, 4, 1)
    assert rows["t"]["revenue"] == {"USD": 2900 + 4950 + 2900, "JPY": 1500}
    assert rows["t"]["methods"] == {"email": 3, "coupon": 1}
    assert rows["u"]["revenue"] == {"EUR": 9900} and rows["u"]["sent"] == 2
    offers = {r["offer"]: r for r in report(run, "--by", "offer")["rows"]}
    assert offers["launch"]["orders"] == 4 and offers["course"]["orders"] == 1
    data = report(run, "--by", "offer")
    assert data["lists_not_mailed"] == [{"list": "dormant", "active": 2}]
    assert data["lists_without_revenue"] == []


def test_a_refund_removes_revenue_and_the_order(run, shop, tmp_path):
    sales(run, tmp_path, SALES)
    f = tmp_path / "refunds.csv"
    f.write_text(
        "order,email,amount,currency,date,refunded\n"
        "1,a@example.com,29,USD,2026-11-02T10:00:00Z,29\n"
        "3,d@example.com,49.50,USD,2026-11-03T10:00:00Z,9.50\n"
    )
    s = json.loads(run("sales", "import", str(f), "--json").output)
    assert (s["imported"], s["updated"]) == (0, 2)
    rows = {r["list"]: r for r in report(run)["rows"]}
    assert rows["blog"]["revenue"] == {"JPY": 1500, "EUR": 9900}
    assert rows["blog"]["orders"] == 2
    assert rows["shop"]["revenue"] == {"USD": 4000}


def test_a_period_counts_the_sales_and_campaigns_inside_it(run, shop, tmp_path):
    sales(run, tmp_path, SALES)
    data = report(run, "--by", "campaign", "--since", "2026-11-10", "--until", "2026-11-30")
    assert [(r["campaign"], r["sent"], r["revenue"]) for r in data["rows"]] == [
        ("u", 2, {"EUR": 9900})
    ]
    assert data["totals"]["revenue"] == {"EUR": 9900, "USD": 1000}
    early = report(run, "--until", "2026-10-31")
    assert early["totals"]["revenue"] == {}
    result = run("report", "--since", "nope", ok=False)
    assert result.output == "Error: --since 'nope' is not a date such as 2026-11-01\n"
    result = run("report", "--since", "2026-11-30", "--until", "2026-11-01", ok=False)
    assert result.output == "Error: --since must come before --until\n"


def test_unsubscribes_and_bounces_caused_by_a_campaign_are_counted(run, ws, shop):
    from listkit.audience.subscribers import unsubscribe

    t = ws.db.execute("SELECT id FROM campaigns WHERE slug = 't'").fetchone()[0]
    unsubscribe(ws.db, "a@example.com", campaign_id=t)
    suppress(ws.db, "f@example.com", "hard_bounce", campaign_id=t)
    suppress(ws.db, "c@example.com", "unsubscribed")  # no campaign: not counted
    blog = {r["list"]: r for r in report(run)["rows"]}["blog"]
    assert (blog["unsubscribed"], blog["bounced"]) == (1, 1)
    rows = {r["campaign"]: r for r in report(run, "--by", "campaign")["rows"]}
    assert (rows["t"]["unsubscribed"], rows["u"]["unsubscribed"]) == (1, 0)


def test_unsubscribe_link_is_verified_and_counted_against_its_campaign(run, workspace, shop):
    from listkit.config import load_settings
    from listkit.mail.tracking import unsubscribe_url

    token = tokens(shop.db, "u")["b@example.com"]
    settings = load_settings(workspace)
    url = unsubscribe_url(settings.public_base_url(), settings.secret_key(), token)
    bad = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    result = run("unsubscribe", bad, ok=False)
    assert result.output == (
        "Error: the link's signature does not match LISTKIT_SECRET: not a link we sent\n"
    )
    assert run("unsubscribe", url, "--everything").output.startswith(
        "b@example.com: You are unsubscribed from everything.\n"
    )
    rows = {r["campaign"]: r for r in report(run, "--by", "campaign")["rows"]}
    assert (rows["t"]["unsubscribed"], rows["u"]["unsubscribed"]) == (0, 1)


def test_table_formats_money_and_csv_has_one_line_per_currency(run, shop, tmp_path):
    sales(run, tmp_path, SALES)
    table = run("report").output
    blog = next(line for line in table.splitlines() if line.startswith("blog"))
    assert "EUR 99.00, JPY 1,500, USD 29.00" in blog
    assert "60.00%" in blog and "email 3" in blog
    assert "Total: 6 orders, EUR 99.00, JPY 1,500, USD 117.50 (USD 10.00 unattributed)" in table
    assert "Lists not mailed: dormant (2 active)" in table
    lines = run("report", "--csv").output.splitlines()
    assert lines[0] == (
        "list,audience,sent,failed,unsubscribed,bounced,orders,currency,revenue,"
        "conversion_rate,revenue_per_1000,complaints,bounce_rate,complaint_rate,clicks,click_to_buy,"
        "methods,mailed"
    )
    assert [line for line in lines if line.startswith("blog,")] == [
        "blog,4,5,1,0,0,3,EUR,9900,0.6,1980000,0,0.0,0.0,0,,email=3,yes",
        "blog,4,5,1,0,0,3,JPY,1500,0.6,300000,0,0.0,0.0,0,,email=3,yes",
        "blog,4,5,1,0,0,3,USD,2900,0.6,580000,0,0.0,0.0,0,,email=3,yes",
    ]


def test_holdout_compares_mailed_and_held_out_buyers_in_the_window(run, ws, tmp_path):
    w = World(ws.db)
    cid = w.campaign("h", holdout=0.2, days=7)
    mailed = [f"m{i}@example.com" for i in range(40)]
    held = [f"h{i}@example.com" for i in range(10)]
    for email in mailed:
        w.deliver(cid, email, "blog")
    for email in held:
        w.deliver(cid, email, "blog", state="held_out")
    sales(
        run,
        tmp_path,
        "".join(f"m{i},m{i}@example.com,10,USD,2026-11-03T00:00:00Z,,,\n" for i in range(6))
        + "m6,m6@example.com,10,USD,2026-11-08T10:00:01Z,,,\n"  # after the window
        + "h0,h0@example.com,10,USD,2026-11-08T10:00:00Z,,,\n"  # last moment of the window
        + "h1,h1@example.com,10,USD,2026-11-01T09:00:00Z,,,\n",  # before the campaign
    )
    (h,) = report(run)["holdout"]
    assert (h["campaign"], h["window_days"]) == ("h", 7)
    assert (h["mailed"], h["mailed_buyers"], h["held_out"], h["held_out_buyers"]) == (40, 6, 10, 1)
    assert h["difference"] == pytest.approx(6 / 40 - 1 / 10)
    assert h["ci95"][0] < h["difference"] < h["ci95"][1]
    assert "Lift of h: mailed 15.00% bought, held out 10.00%: +5.00% (95% interval" in (
        run("report").output
    )


def test_a_holdout_buyer_counts_once_and_only_through_a_message_mailed_or_held_out(
    run, ws, tmp_path
):
    # The buyers of a holdout campaign are found from the window's orders, each
    # matched to its reader's one delivery of the campaign.
    w = World(ws.db)
    cid = w.campaign("h", holdout=0.5, days=7)
    for email in ("twice@example.com", "refund@example.com", "quiet@example.com"):
        w.deliver(cid, email, "blog")
    w.deliver(cid, "bounced@example.com", "blog", state="failed", code=550)
    w.deliver(cid, "held@example.com", "blog", state="held_out")
    w.deliver(w.campaign("other", holdout=0.5), "elsewhere@example.com", "blog")
    sales(
        run,
        tmp_path,
        "1,twice@example.com,10,USD,2026-11-02T00:00:00Z,,,\n"
        "2,TWICE@Example.com,10,USD,2026-11-03T00:00:00Z,,,\n"  # the same reader again
        "3,bounced@example.com,10,USD,2026-11-02T00:00:00Z,,,\n"  # never mailed
        "4,elsewhere@example.com,10,USD,2026-11-02T00:00:00Z,,,\n"  # another campaign's
        "5,held@example.com,10,USD,2026-11-02T00:00:00Z,,,\n"
        "6,refund@example.com,10,USD,2026-11-02T00:00:00Z,,,\n",
    )
    with ws.db.conn:
        ws.db.execute("UPDATE sales SET status = 'refunded' WHERE order_id = '6'")
    h = next(x for x in report(run)["holdout"] if x["campaign"] == "h")
    assert (h["mailed"], h["mailed_buyers"], h["held_out"], h["held_out_buyers"]) == (3, 1, 1, 1)


def _statements(monkeypatch) -> list[str]:
    """The SQL statements (parameters bound) the workspace's database runs from now on."""
    import listkit.workspace

    statements: list[str] = []
    opened = listkit.workspace.open_db

    def traced(*args, **kwargs):
        db = opened(*args, **kwargs)
        db.conn.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(listkit.workspace, "open_db", traced)
    return statements


@pytest.mark.parametrize(
    "args",
    [
        ["report"],
        ["report", "--json"],
        ["report", "--by", "campaign", "--csv"],
        ["report", "--html", "r.html"],
        ["report", "--by", "offer", "--html", "r.html"],
        ["report", "--by", "variant", "--html", "r.html"],
    ],
)
def test_one_report_command_builds_its_figures_once_reading_no_table_twice(
    world, tmp_path, monkeypatch, args
):
    # `report --html` built the report three times (four with --by variant), and the
    # table read the offer tests twice: every figure was computed again, every query run
    # again, on a database of millions of deliveries.
    statements = _statements(monkeypatch)
    world(*[str(tmp_path / a) if a.endswith(".html") else a for a in args])
    # The queries that read campaigns and their outcome (a lookup of the lists' names
    # may repeat).
    figures = Counter(
        s for s in statements if re.search(r"\b(campaigns|deliveries|sales|events)\b", s)
    )
    assert len(figures) > 5
    assert {sql: n for sql, n in figures.items() if n > 1} == {}


def test_a_report_never_passes_over_the_deliveries_whatever_it_groups_by(world, ws):
    # Each grouping counted the deliveries again, and the complaint warnings walked
    # every delivery looking up its complaints: on millions of deliveries, most of a
    # report's time. The counts the database keeps (delivery_counts) serve the list,
    # offer and campaign views, the complaint rates, the holdouts and the lists
    # mailed; what readers answered is read from the answers, looking up only their
    # deliveries.
    statements: list[str] = []
    ws.db.conn.set_trace_callback(statements.append)
    build_reports(ws.db, BY)
    build_reports(ws.db, BY, since="2026-11-05")
    ws.db.conn.set_trace_callback(None)
    steps = [
        step
        for sql in statements
        if sql.lstrip().startswith("SELECT")
        for *_ids, step in ws.db.execute(f"EXPLAIN QUERY PLAN {sql}")
    ]
    deliveries = [s for s in steps if re.match(r"(SCAN|SEARCH) (deliveries|d|b)\b", s)]
    assert [s for s in deliveries if s.startswith("SCAN")] == []
    assert any(s.startswith("SCAN delivery_counts") for s in steps)
    # The period's pass, and an offer test's deliveries, seek the same index per campaign.
    assert all(
        "deliveries_report (campaign_id=?" in s or "rowid=?" in s or "subscriber_id=?" in s
        for s in deliveries
        if s.startswith("SEARCH")
    )


def test_the_report_command_loads_neither_email_validator_nor_installed_packages_metadata(
    shop, workspace
):
    # Every `listkit report` paid for compiling email-validator's grammar (an address
    # is never validated there) and for reading every installed package's metadata in
    # search of sqlite-utils plugins (listkit uses none): together about as long as
    # counting a million deliveries.
    import subprocess
    import sys

    code = (
        "import sys; from listkit.cli import cli\n"
        "try: cli(sys.argv[1:], prog_name='listkit')\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "print(sorted({'email_validator', 'importlib.metadata'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--workspace", str(workspace), "report", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines()[-1] == "[]"


# --- HTML -----------------------------------------------------------------------------------


def chart(html: str, chart_id: str) -> str:
    return re.search(rf'<div id="{chart_id}".*?</section>', html, re.S).group(0)


def bars(html: str, chart_id: str) -> dict[str, int]:
    drawn = chart(html, chart_id)
    return {k: int(v) for k, v in re.findall(r'data-label="([^"]+)" data-value="(-?\d+)"', drawn)}


def test_html_report_is_readable_by_its_owner_only_even_when_it_replaces_a_file(run, tmp_path):
    # It holds the business's revenue by list and campaign: private, like the CSV exports.
    fresh, old = tmp_path / "fresh.html", tmp_path / "old.html"
    old.write_text("previous")
    old.chmod(0o644)
    for out in (fresh, old):
        run("report", "--html", str(out))
        assert out.stat().st_mode & 0o777 == 0o600, out


def test_html_report_draws_the_json_figures_and_needs_no_network(run, shop, tmp_path):
    sales(run, tmp_path, SALES.replace("1500,JPY", "15,USD"))
    out = tmp_path / "r.html"
    assert run("report", "--html", str(out)).output == f"Wrote {out}.\n"
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    by_list, by_offer = report(run), report(run, "--by", "offer")
    assert bars(html, "revenue-by-list") == {
        r["list"]: r["revenue"].get("USD", 0) for r in by_list["rows"]
    }
    assert bars(html, "per-1000-by-list") == {
        r["list"]: r["revenue_per_1000"].get("USD", 0) for r in by_list["rows"]
    }
    assert bars(html, "revenue-by-offer") == {
        r["offer"]: r["revenue"].get("USD", 0) for r in by_offer["rows"]
    }
    assert bars(html, "revenue-over-time") == {
        p["day"]: p["revenue"] for p in by_list["over_time"] if p["currency"] == "USD"
    }
    assert bars(html, "revenue-by-list")["blog"] == 2900 + 1500
    embedded = json.loads(
        re.search(r'<script type="application/json" id="listkit-report">(.*?)</script>', html, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert embedded["report"] == by_list
    assert "also earned in EUR" in html


def test_html_escapes_names_from_the_data(ws, tmp_path):
    w = World(ws.db)
    cid = w.campaign("x", offer="<b>offer</b>")
    w.deliver(cid, "a@example.com", "<script>")
    from listkit.sales.report_html import render_html

    data = build_report(ws.db, "list")
    html = render_html(data, data, build_report(ws.db, "offer"))
    assert "<script>" not in html.replace('<script type="application/json"', "")
    assert "&lt;script&gt;" in html


def test_charts_use_the_currency_with_most_revenue_in_whole_units():
    from listkit.sales.report_html import main_currency

    # 0.100 KWD is more minor units than USD 0.50, but fewer whole units.
    assert main_currency({"totals": {"revenue": {"KWD": 100, "USD": 50}}}) == "USD"
    assert main_currency({"totals": {"revenue": {"KWD": 1000, "USD": 50}}}) == "KWD"
    assert main_currency({"totals": {"revenue": {}}}) is None


def test_report_tells_lists_not_mailed_from_lists_mailed_that_earned_nothing(run, shop, tmp_path):
    t = shop.db.execute("SELECT id FROM campaigns WHERE slug = 't'").fetchone()[0]
    shop.deliver(t, "q@example.com", "quiet")
    sales(run, tmp_path, SALES)
    data = report(run)
    assert data["lists_without_revenue"] == [{"list": "quiet", "active": 1, "sent": 1}]
    assert data["lists_not_mailed"] == [{"list": "dormant", "active": 2, "sent": 0}]
    rows = {r["list"]: r for r in data["rows"]}
    assert [rows[x]["mailed"] for x in ("blog", "quiet", "dormant", "(no list)")] == [
        True,
        True,
        False,
        None,
    ]
    by_offer = report(run, "--by", "offer")
    assert by_offer["lists_without_revenue"] == [{"list": "quiet", "active": 1}]
    assert by_offer["lists_not_mailed"] == [{"list": "dormant", "active": 2}]
    # Only campaigns started in the period count as mailing a list.
    later = report(run, "--since", "2026-11-05")
    assert [x["list"] for x in later["lists_not_mailed"]] == ["dormant", "quiet", "shop"]
    assert later["lists_without_revenue"] == []

    text = run("report").output
    assert "Lists mailed that earned nothing: quiet (1 active, 1 sent)" in text
    assert "Lists not mailed: dormant (2 active)" in text
    assert "no revenue" not in text
    lines = run("report", "--csv").output.splitlines()
    assert lines[0].endswith(",methods,mailed")
    mailed = {line.split(",")[0]: line.split(",")[-1] for line in lines[1:]}
    assert mailed == {
        "(no list)": "",
        "blog": "yes",
        "dormant": "no",
        "quiet": "yes",
        "shop": "yes",
    }
    out = tmp_path / "r.html"
    run("report", "--html", str(out))
    html = out.read_text()
    assert "<h2>Lists mailed that earned nothing</h2>" in html
    assert re.search(r"<h2>Lists not mailed</h2><p[^>]*>dormant \(2 active\)", html)
    assert "Lists that earned nothing" not in html


def test_an_html_report_path_that_cannot_be_written_is_named_in_the_error(run, tmp_path):
    where = tmp_path / "missing" / "r.html"
    result = run("report", "--html", str(where), ok=False)
    assert (
        result.output == f"Error: --html {where}: cannot be written (No such file or directory)\n"
    )


@pytest.mark.parametrize("target", ["listkit.db", ".env"])
def test_an_html_report_over_the_database_or_env_file_is_refused_and_both_are_kept(
    run, workspace, target
):
    # `--html list<TAB>` completes to listkit.db: writing there destroyed every subscriber.
    run("lists", "create", "blog")
    before = (workspace / target).read_bytes()
    result = run("report", "--html", str(workspace / target), ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --html {workspace / target} is this workspace's "
        f"{'database' if target == 'listkit.db' else 'settings file'}: name another file\n"
    )
    assert (workspace / target).read_bytes() == before
    assert "blog" in run("lists", "ls").output


def test_one_click_this_list_and_everything_unsubscribes_each_count_once_where_they_came_from(
    run, ws, shop
):
    # Only "everything" (a suppression) was counted: the RFC 8058 one-click POST and the
    # page's "this list" button leave an unsubscribe event and a membership, no suppression.
    # Through the web app's own routes, as the reader's mail program and browser send them.
    from starlette.testclient import TestClient

    from listkit.mail.tracking import unsubscribe_url
    from listkit.web import create_app

    def path(campaign, email):
        token = tokens(ws.db, campaign)[email]
        return unsubscribe_url("", ws.settings.secret_key(), token)

    one_click = {"content-type": "application/x-www-form-urlencoded"}
    with TestClient(create_app(ws), raise_server_exceptions=False) as client:
        answers = [
            client.post(
                path("t", "a@example.com"), content="List-Unsubscribe=One-Click", headers=one_click
            ),
            client.post(path("t", "d@example.com"), data={"scope": "list"}),
            client.post(path("u", "b@example.com"), data={"scope": "all"}),
            # The same reader again, from everything this time: still one unsubscribe.
            client.post(path("t", "a@example.com"), data={"scope": "all"}),
            # b left blog through t's message, then everything through u's (both came
            # through blog): one reader of blog, an unsubscribe in each campaign.
            client.post(path("t", "b@example.com"), data={"scope": "list"}),
        ]
    assert [r.status_code for r in answers] == [200] * 5
    by_list = {r["list"]: r["unsubscribed"] for r in report(run)["rows"]}
    assert (by_list["blog"], by_list["shop"]) == (2, 1)
    by_campaign = report(run, "--by", "campaign")["rows"]
    assert {r["campaign"]: r["unsubscribed"] for r in by_campaign} == {"t": 3, "u": 1}
    assert {r["offer"]: r["unsubscribed"] for r in report(run, "--by", "offer")["rows"]} == {
        "course": 1,
        "launch": 3,
    }
    lines = run("report", "--by", "campaign", "--csv").output.splitlines()
    assert [line.split(",")[4] for line in lines] == ["unsubscribed", "3", "1"]
    table = run("report", "--by", "campaign").output.splitlines()
    unsub = table[0].index("unsub")
    assert [line[unsub : unsub + 5].strip() for line in table[1:3]] == ["3", "1"]


def test_a_list_whose_readers_were_mailed_through_another_list_is_not_called_not_mailed(
    run, shop, tmp_path
):
    # A reader on two lists of a campaign gets one message, targeted through one list:
    # the other list's readers were mailed, through that list.
    shop.list("fans", "a@example.com", "b@example.com", "d@example.com")
    shop.list("mixed", "c@example.com", "z9@example.com")
    sales(run, tmp_path, SALES)
    data = report(run)
    assert data["lists_not_mailed"] == [{"list": "dormant", "active": 2, "sent": 0}]
    assert data["lists_mailed_through_others"] == [
        {"list": "fans", "active": 3, "mailed": 3, "through": {"blog": 2, "shop": 1}},
        {"list": "mixed", "active": 2, "mailed": 1, "through": {"blog": 1}},
    ]
    rows = {r["list"]: r for r in data["rows"]}
    assert (rows["fans"]["mailed"], rows["fans"]["mailed_through"]) == (
        False,
        {"blog": 2, "shop": 1},
    )
    assert rows["blog"]["mailed_through"] == {}
    by_campaign = report(run, "--by", "campaign")
    assert [x["list"] for x in by_campaign["lists_not_mailed"]] == ["dormant"]
    assert [x["list"] for x in by_campaign["lists_mailed_through_others"]] == ["fans", "mixed"]
    # Only the campaigns of the period: u mailed a and b through blog.
    later = report(run, "--since", "2026-11-05")
    assert later["lists_mailed_through_others"] == [
        {"list": "fans", "active": 3, "mailed": 2, "through": {"blog": 2}},
    ]
    assert [x["list"] for x in later["lists_not_mailed"]] == ["dormant", "mixed", "shop"]

    text = run("report").output
    assert "Lists not mailed: dormant (2 active)\n" in text
    assert (
        "Lists mailed through other lists (a reader on several lists of a campaign gets one "
        "message): fans (3 active: 2 mailed through blog, 1 through shop), "
        "mixed (2 active: 1 mailed through blog)\n"
    ) in text
    mailed = {
        line.split(",")[0]: line.split(",")[-1]
        for line in run("report", "--csv").output.splitlines()[1:]
    }
    assert (mailed["fans"], mailed["mixed"], mailed["dormant"]) == (
        "through blog+shop",
        "through blog",
        "no",
    )
    out = tmp_path / "r.html"
    run("report", "--html", str(out))
    html = out.read_text()
    assert "<h2>Lists mailed through other lists</h2>" in html
    assert "fans (3 active: 2 mailed through blog, 1 through shop)" in html
    assert not re.search(r"<h2>Lists not mailed</h2><p[^>]*>[^<]*fans", html)


def test_campaigns_ls_and_the_report_by_campaign_give_a_sent_campaign_the_same_audience(
    run, workspace, server
):
    # The server refused one address (550): it is suppressed after the send. campaigns ls
    # counted the audience afresh (one fewer), the report the readers the campaign chose.

    controller, handler = server
    run("lists", "create", "blog")
    for i in range(5):
        run("subscribers", "add", f"r{i}@example.com", "--list", "blog")
    (workspace / "campaigns" / "t.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nholdout = 0.2\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )
    handler.fault("r1@example.com", "550")
    run("send", "t", "--yes", ok=False)
    listed = {c["campaign"]: c for c in json.loads(run("campaigns", "ls", "--json").output)}
    (row,) = report(run, "--by", "campaign")["rows"]
    assert row["failed"] == 1
    assert listed["t"]["audience"] == row["audience"] == 5


def _chromium_scripts():
    import importlib.util
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("Debian's chromium is not installed")
    path = Path(__file__).parent.parent / "scripts" / "chromium.py"
    spec = importlib.util.spec_from_file_location("listkit_scripts_chromium", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("width", [390, 1280])
def test_the_html_report_fits_a_phone_and_a_laptop_with_chart_text_of_at_least_11px(
    run, shop, tmp_path, width
):
    # On a 390 px phone the page was 702 px wide and the charts' text 4-5 px: SVGs 960
    # units wide scaled down to fit, text and all. Measured in Chromium, as laid out.
    chromium = _chromium_scripts()
    sales(run, tmp_path, SALES)
    shop.list("fans", "a@example.com")
    out = tmp_path / "r.html"
    run("report", "--html", str(out))
    page = chromium.layout(out.read_text(), width)
    assert page["viewport"] == width
    assert page["scroll_width"] <= width, page["wider_than_viewport"]
    chart_text = [t for t in page["texts"] if t["chart"]]
    assert len(chart_text) > 20
    too_small = [t for t in page["texts"] if t["size"] < 11]
    assert too_small == []


def test_a_tiny_bounce_rate_draws_a_sliver_not_a_full_bar(ws):
    # 0.04% was drawn full width: the bars were scaled against the largest rate, however
    # small. The scale now ends at 5% at least (past 2% a sender's reputation suffers).
    from listkit.sales.report_html import render_html

    w = World(ws.db)
    cid = w.campaign("big")
    for i in range(2500):
        w.deliver(cid, f"r{i}@example.com", "blog")
    suppress(ws.db, "r0@example.com", "hard_bounce", campaign_id=cid)
    by_campaign = build_report(ws.db, "campaign")
    assert by_campaign["rows"][0]["bounce_rate"] == 1 / 2500
    by_list = build_report(ws.db, "list")
    html = render_html(by_list, by_list, build_report(ws.db, "offer"), by_campaign)
    drawn = chart(html, "bounce-rate-by-campaign")
    assert 'data-scale="0.05"' in drawn
    (width,) = re.findall(r'<span class="fill" style="width:([^"]+)"', drawn)
    assert width == "max(2px, 0.80%)"
    assert '<span class="value">0.04%</span>' in drawn
    assert re.search(r'<span class="tick"[^>]*>5%</span>', drawn)


def test_the_readme_report_example_is_what_listkit_report_prints_for_the_demo(
    tmp_path, monkeypatch
):
    import tempfile

    from click.testing import CliRunner

    from listkit.cli import cli
    from listkit.demo import run_demo

    readme = (Path(__file__).parent.parent / "docs" / "sales.md").read_text()
    example = re.search(r"```(?:console)?\n\$ listkit report\n(.*?)```", readme, re.S).group(1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = run_demo(quiet=True)
    printed = CliRunner().invoke(cli, ["--workspace", str(root), "report"]).output
    assert example == printed


# --- every form, as before ------------------------------------------------------------------
# `listkit report` in every form, compared with what it printed before the report code was
# split into steps (tests/golden/): a refactoring changes no figure and no byte. A change
# meant to alter the output rewrites the files, to be read in the diff:
# GOLDEN_WRITE=1 .venv/bin/pytest tests/test_reports.py -k golden

GOLDEN = Path(__file__).parent / "golden"
BYS = ("list", "offer", "campaign", "variant", "source", "signup-month", "silent")
PERIODS = ((), ("--since", "2026-11-05"), ("--since", "2026-11-01", "--until", "2026-11-04"))


@pytest.fixture
def world(run, ws, shop, tmp_path):
    """The shop, and: a list mailed through another; a holdout campaign with a bounce,
    an unsubscribe, a complaint and clicks; an offer test; more sales."""
    w = shop
    w.list("fans", "a@example.com", "b@example.com")
    h = w.campaign("h", holdout=0.2, days=7, offer="<b>offer</b>")
    mailed = {f"m{i}@example.com": w.deliver(h, f"m{i}@example.com", "blog") for i in range(40)}
    for i in range(10):
        w.deliver(h, f"h{i}@example.com", "blog", state="held_out")
    ab = w.campaign("ab", offer="launch", started="2026-11-05T10:00:00+00:00")
    x1, x2, _x3 = (w.deliver(ab, f"x{i}@example.com", "pod") for i in (1, 2, 3))
    with ws.db.conn:
        ws.db.execute(
            "UPDATE campaigns SET variants = ? WHERE id = ?", ['["launch", "bundle"]', ab]
        )
        ws.db.execute("UPDATE deliveries SET variant = 'launch' WHERE id = ?", [x1["id"]])
        ws.db.execute(
            "UPDATE deliveries SET variant = 'bundle' WHERE subscriber_id IN"
            " (SELECT id FROM subscribers WHERE email IN (?, ?))",
            ["x2@example.com", "x3@example.com"],
        )
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
               token, imported) VALUES ('t', 'v1', 4900, 'USD', '2026-11-06T10:00:00+00:00',
               'x2@example.com', 'x2@example.com', ?, '2026-11-06')""",
            [x2["token"]],
        )
        for kind, i in [("complaint", 2), ("click", 3), ("click", 4), ("click_bot", 5)]:
            ws.db.execute(
                "INSERT INTO events (delivery_id, kind, at, detail) VALUES (?, ?, ?, '{}')",
                [mailed[f"m{i}@example.com"]["id"], kind, "2026-11-02T10:00:00+00:00"],
            )
        ws.db.execute(
            "INSERT INTO events (delivery_id, kind, at, detail) VALUES (?, ?, ?, '{}')",
            [mailed["m6@example.com"]["id"], "unsubscribe", "2026-11-02T10:00:00+00:00"],
        )
    attribute_all(ws.db, ws.settings.secret_key())
    suppress(ws.db, "m0@example.com", "hard_bounce", campaign_id=h)
    suppress(ws.db, "m1@example.com", "unsubscribed", campaign_id=h)
    f = tmp_path / "sales.csv"
    f.write_text(
        "order,email,amount,currency,date,coupon,utm_campaign,utm_content\n"
        + SALES
        + "".join(f"m{i},m{i}@example.com,10,USD,2026-11-03T00:00:00Z,,,\n" for i in range(3, 9))
        + "h0,h0@example.com,10,USD,2026-11-08T10:00:00Z,,,\n"
    )
    run("sales", "import", str(f))
    return run


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("GOLDEN_WRITE") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_every_form_of_the_report_prints_the_golden_output(world):
    out = []
    for by in BYS:
        for period in PERIODS:
            for form in ((), ("--json",), ("--csv",)):
                args = ("report", "--by", by, *period, *form)
                result = world(*args)
                out.append(f"$ listkit {' '.join(args)}\n{result.output}")
    _golden("report.txt", "\n".join(out))


@pytest.mark.parametrize(
    "name, args",
    [
        ("report-by-list.html", ()),
        ("report-by-offer-since.html", ("--by", "offer", "--since", "2026-11-05")),
        ("report-by-variant-until.html", ("--by", "variant", "--until", "2026-11-04")),
    ],
)
def test_the_html_report_is_the_golden_page(world, tmp_path, name, args):
    page = tmp_path / "report.html"
    world("report", *args, "--html", str(page))
    _golden(name, page.read_text())
