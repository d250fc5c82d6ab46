"""Clicks: which hits are a person's, and what reports make of them."""

from listkit.inbox.clicks import click_kind, record_click
from listkit.sales.reports import build_report
from tests.world import T0, World

PERSON = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"


def test_head_requests_scanners_and_instant_hits_are_not_a_persons_click():
    later = "2026-11-01T10:05:00+00:00"
    assert click_kind("GET", PERSON, T0, later) == "click"
    assert click_kind("HEAD", PERSON, T0, later) == "click_bot"
    assert click_kind("GET", None, T0, later) == "click_bot"
    for agent in (
        "Mozilla/5.0 (compatible; Googlebot/2.1)",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16) SafeLinks",
        "Proofpoint URL Defense",
        "python-requests/2.31",
        "Mozilla/5.0 HeadlessChrome/120",
    ):
        assert click_kind("GET", agent, T0, later) == "click_bot", agent
    assert click_kind("GET", PERSON, T0, "2026-11-01T10:00:04+00:00") == "click_bot"


def test_reports_count_clicking_deliveries_and_orders_per_click(ws, run, tmp_path):
    world = World(ws.db)
    cid = world.campaign("spring")
    a = world.deliver(cid, "a@example.com", "blog")
    b = world.deliver(cid, "b@example.com", "blog")
    world.deliver(cid, "c@example.com", "shop")
    with ws.db.conn:
        for d, kind in ((a, "click"), (a, "click"), (b, "click"), (b, "click_bot")):
            record_click(ws.db, d["id"], kind, T0, "https://x.example/", None, PERSON)
    sales = tmp_path / "s.csv"
    sales.write_text("order,email,amount,currency,date\n1,a@example.com,10.00,USD,2026-11-02\n")
    run("sales", "import", str(sales))
    rows = {r["list"]: r for r in build_report(ws.db, "list")["rows"]}
    assert (rows["blog"]["clicks"], rows["shop"]["clicks"]) == (2, 0)
    assert rows["blog"]["click_to_buy"] == 0.5 and rows["shop"]["click_to_buy"] is None
    by_campaign = build_report(ws.db, "campaign")["rows"]
    assert [(r["campaign"], r["clicks"]) for r in by_campaign] == [("spring", 2)]


def test_click_to_buy_is_the_share_of_clicking_deliveries_that_bought_never_over_100(
    ws, run, tmp_path
):
    world = World(ws.db)
    cid = world.campaign("spring")
    a = world.deliver(cid, "a@example.com", "blog")
    b = world.deliver(cid, "b@example.com", "blog")
    world.deliver(cid, "d@example.com", "blog")
    with ws.db.conn:
        for d in (a, b):
            record_click(ws.db, d["id"], "click", T0, "https://x.example/", None, PERSON)
    sales = tmp_path / "s.csv"
    sales.write_text(
        "order,email,amount,currency,date\n"
        "1,a@example.com,10.00,USD,2026-11-02\n"
        "2,a@example.com,10.00,USD,2026-11-03\n"  # a second order of the same clicker
        "3,d@example.com,10.00,USD,2026-11-02\n"  # a buyer who never clicked
    )
    run("sales", "import", str(sales))
    (row,) = build_report(ws.db, "list")["rows"]
    assert (row["clicks"], row["orders"]) == (2, 3)
    assert row["click_to_buy"] == 0.5  # a bought after clicking, b did not


def test_with_click_tracking_offer_links_point_at_the_service(workspace):
    from listkit.mail.compose import Composer
    from listkit.mail.offers import load_offer
    from listkit.mail.tracking import link_id, verify_click
    from listkit.workspace import Workspace

    ws = Workspace(workspace)
    offer = load_offer(ws.offers_dir, "launch")
    kwargs = {"campaign": "spring", "offers_dir": ws.offers_dir}
    args = {"subscriber": {"email": "a@example.com"}, "list_slug": "blog", "list_title": None}
    tracked = Composer(offer, ws.settings, track_clicks=True, **kwargs)
    message = tracked.compose(token="abcdefghijklmnop", **args)
    link = link_id(offer.url)
    prefix = f"https://example.com/listkit/c/abcdefghijklmnop/{link}/"
    assert prefix in message.text and "shop.example.com" not in message.text
    sig = message.text.split(prefix)[1].split()[0]
    assert verify_click(ws.settings.secret_key(), "abcdefghijklmnop", link, sig)
    assert tracked.links == {link: offer.url}
    direct = Composer(offer, ws.settings, **kwargs).compose(token="abcdefghijklmnop", **args)
    assert "/c/" not in direct.text and "utm_campaign=spring" in direct.text
    ws.close()


def test_the_track_clicks_setting_is_yes_or_no(workspace):
    import pytest

    from listkit.config import load_settings
    from listkit.errors import ConfigError

    assert load_settings(workspace, {}).track_clicks is True
    assert load_settings(workspace, {"LISTKIT_TRACK_CLICKS": "no"}).track_clicks is False
    with pytest.raises(ConfigError, match="LISTKIT_TRACK_CLICKS must be yes or no, not 'maybe'"):
        load_settings(workspace, {"LISTKIT_TRACK_CLICKS": "maybe"}).track_clicks  # noqa: B018


def test_a_sale_goes_to_the_campaign_the_buyer_clicked_before_a_later_unclicked_one(
    ws, run, tmp_path
):
    world = World(ws.db)
    clicked = world.deliver(world.campaign("spring"), "a@example.com", "blog")
    world.deliver(
        world.campaign("summer", started="2026-11-02T10:00:00+00:00"),
        "a@example.com",
        "blog",
        sent_at="2026-11-02T10:00:00+00:00",
    )
    with ws.db.conn:
        record_click(
            ws.db, clicked["id"], "click", "2026-11-01T12:00:00+00:00", "https://x/", None, PERSON
        )
    sales = tmp_path / "s.csv"
    sales.write_text("order,email,amount,currency,date\n1,a@example.com,10.00,USD,2026-11-03\n")
    run("sales", "import", str(sales))
    row = ws.db.execute(
        "SELECT s.method, c.slug FROM sales s JOIN campaigns c ON c.id = s.campaign_id"
    ).fetchone()
    assert row == ("click", "spring")


def clicked_world(ws, run, tmp_path):
    world = World(ws.db)
    cid = world.campaign("spring")
    a = world.deliver(cid, "a@example.com", "blog")
    b = world.deliver(cid, "b@example.com", "blog")
    world.deliver(cid, "c@example.com", "shop")
    with ws.db.conn:
        for d in (a, b):
            record_click(ws.db, d["id"], "click", T0, "https://x.example/", None, PERSON)
    sales = tmp_path / "s.csv"
    sales.write_text("order,email,amount,currency,date\n1,a@example.com,10.00,USD,2026-11-02\n")
    run("sales", "import", str(sales))


def test_the_table_and_the_csv_show_clicks_and_click_to_buy(ws, run, tmp_path):
    clicked_world(ws, run, tmp_path)
    table = run("report").output.splitlines()
    head = table[0]
    blog = next(line for line in table if line.startswith("blog"))
    shop = next(line for line in table if line.startswith("shop"))

    def cell(line, name):  # the aligned column under the header `name`
        start = head.index(name)
        return line[start:].split("  ")[0].strip()

    assert (cell(blog, "clicks"), cell(shop, "clicks")) == ("2", "0")
    assert (cell(blog, "buy/click"), cell(shop, "buy/click")) == ("50.00%", "-")
    lines = run("report", "--csv", "--by", "campaign").output.splitlines()
    assert lines[0].split(",")[-3:-1] == ["clicks", "click_to_buy"]
    assert lines[1].split(",")[-3:-1] == ["2", "0.5"]


def test_the_html_report_has_a_clicks_column_and_draws_click_to_buy_per_campaign(ws, run, tmp_path):
    import re

    clicked_world(ws, run, tmp_path)
    out = tmp_path / "r.html"
    run("report", "--html", str(out))
    html = out.read_text()
    assert "<th>clicks</th><th>buy/click</th>" in html
    assert re.search(r'<td data-row="blog" data-rate="click_to_buy" data-value="0.5">50.00%', html)
    chart = re.search(r'<div id="click-to-buy-by-campaign".*?</section>', html).group(0)
    assert 'data-label="spring" data-rate="0.5"' in chart
