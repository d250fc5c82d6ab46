"""Where buyers come from, a subscriber's purchases, and the silent subscribers of a list."""

from __future__ import annotations

import json

import pytest

from listkit.addresses import email_key
from listkit.sales.stats import buyers_by, silent_by_list
from listkit.send.campaigns import Campaign, iter_audience
from tests.world import World


def sale(db, order, email, at, amount, *, currency="USD", status="paid", delivery_id=None):
    with db.conn:
        db.execute(
            """INSERT INTO sales (source, order_id, status, amount, refunded, currency, at, email,
               email_key, delivery_id, imported) VALUES ('t', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                order,
                status,
                amount,
                amount if status == "refunded" else 0,
                currency,
                at,
                email,
                email_key(email),
                delivery_id,
                at,
            ],
        )


def origin(db, email, source, signup):
    with db.conn:
        db.execute("UPDATE subscribers SET source = ? WHERE key = ?", [source, email_key(email)])
        db.execute(
            """UPDATE memberships SET consent_at = ? WHERE subscriber_id =
               (SELECT id FROM subscribers WHERE key = ?)""",
            [signup, email_key(email)],
        )


@pytest.fixture
def world(world: World) -> World:
    """ann and bob came from a Mailchimp import in January, cat and dan from the form
    in March. ann bought twice (once through her link under another address), cat
    once; bob's order was refunded."""
    w = world
    w.list("blog", "ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com")
    cid = w.campaign("launch")
    ann = w.deliver(cid, "ann@example.com", "blog")
    sale(w.db, "1", "ann@example.com", "2026-11-02T10:00:00+00:00", 2900, delivery_id=ann["id"])
    sale(
        w.db, "2", "ann.work@example.org", "2026-11-03T10:00:00+00:00", 4900, delivery_id=ann["id"]
    )
    sale(w.db, "3", "cat@example.com", "2026-11-04T10:00:00+00:00", 2900)
    sale(w.db, "4", "bob@example.com", "2026-11-04T10:00:00+00:00", 2900, status="refunded")
    # After the deliveries: World.deliver writes the membership afresh.
    for email, source, signup in [
        ("ann@example.com", "import:mailchimp.csv", "2026-01-05 10:00:00"),
        ("bob@example.com", "import:mailchimp.csv", "2026-01-20 10:00:00"),
        ("cat@example.com", "form", "2026-03-02T10:00:00+00:00"),
        ("dan@example.com", "form", "2026-03-30T10:00:00+00:00"),
    ]:
        origin(w.db, email, source, signup)
    return w


def test_revenue_by_source_counts_each_sale_once_per_buyer(world):
    rows = buyers_by(world.db, "source")["rows"]
    assert rows == [
        {
            "source": "form",
            "subscribers": 2,
            "buyers": 1,
            "orders": 1,
            "revenue": {"USD": 2900},
            "revenue_per_subscriber": {"USD": 1450},
        },
        {
            "source": "import:mailchimp.csv",
            "subscribers": 2,
            "buyers": 1,
            "orders": 2,
            "revenue": {"USD": 7800},
            "revenue_per_subscriber": {"USD": 3900},
        },
    ]


def test_revenue_by_signup_month_uses_the_signup_the_export_recorded(world):
    rows = buyers_by(world.db, "signup-month")["rows"]
    assert [(r["signup-month"], r["subscribers"], r["buyers"], r["revenue"]) for r in rows] == [
        ("2026-01", 2, 1, {"USD": 7800}),
        ("2026-03", 2, 1, {"USD": 2900}),
    ]


def test_a_period_counts_only_the_sales_made_in_it(world):
    rows = buyers_by(world.db, "source", since="2026-11-03", until="2026-11-03")["rows"]
    assert [(r["source"], r["orders"], r["revenue"]) for r in rows] == [
        ("form", 0, {}),
        ("import:mailchimp.csv", 1, {"USD": 4900}),
    ]


def test_report_by_source_prints_a_table(world, run):
    out = run("report", "--by", "source").output
    assert "import:mailchimp.csv" in out and "USD 78.00" in out and "USD 39.00" in out
    data = json.loads(run("report", "--by", "signup-month", "--json").output)
    assert [r["signup-month"] for r in data["rows"]] == ["2026-01", "2026-03"]


def test_subscribers_show_gives_purchases_and_lifetime_revenue(world, run):
    out = run("subscribers", "show", "ann@example.com").output
    assert "USD 49.00 on 2026-11-03 (order 2, paid)" in out
    assert "USD 29.00 on 2026-11-02 (order 1, paid)" in out
    assert "  lifetime revenue: USD 78.00\n" in out
    data = json.loads(run("subscribers", "show", "bob@example.com", "--json").output)
    assert data["lifetime_revenue"] == {"USD": 0}
    assert [p["status"] for p in data["purchases"]] == ["refunded"]


@pytest.fixture
def silent_world(ws, workspace):
    """Mailed three times each: sid (nothing), cal (clicked once), bea (bought); two (twice)."""
    (workspace / ".env").write_text((workspace / ".env").read_text() + "LISTKIT_SILENT_AFTER=3\n")
    w = World(ws.db)
    w.list("blog", "sid@example.com", "cal@example.com", "bea@example.com", "two@example.com")
    w.list("podcast", "sid@example.com")
    for n in range(3):
        cid = w.campaign(f"c{n}")
        for who in ("sid", "cal", "bea") + (("two",) if n < 2 else ()):
            d = w.deliver(cid, f"{who}@example.com", "blog")
            if who == "cal" and n == 1:
                with ws.db.conn:
                    ws.db.execute(
                        "INSERT INTO events (delivery_id, kind, at) VALUES (?, 'click', ?)",
                        [d["id"], "2026-11-02"],
                    )
        # A scanner's fetch of sid's link is not a click.
        with ws.db.conn:
            ws.db.execute(
                "INSERT INTO events (delivery_id, kind, at) SELECT id, 'scanner', '2026-11-02' "
                "FROM deliveries WHERE subscriber_id ="
                " (SELECT id FROM subscribers WHERE email = 'sid@example.com')"
            )
    sale(ws.db, "9", "bea@example.com", "2026-11-05T10:00:00+00:00", 2900)
    return w


def test_silent_subscribers_are_those_mailed_n_times_with_no_purchase_and_no_click(
    silent_world, run
):
    assert silent_by_list(silent_world.db, 3) == [
        {"list": "blog", "silent": 1, "threshold": 3},
        {"list": "podcast", "silent": 1, "threshold": 3},
    ]
    assert silent_by_list(silent_world.db, 2)[0]["silent"] == 2  # two counts at 2
    data = json.loads(run("report", "--by", "silent", "--json").output)
    assert data["lists"] == [
        {"list": "blog", "silent": 1, "threshold": 3},
        {"list": "podcast", "silent": 1, "threshold": 3},
    ]
    assert data["subscribers"] == [
        {"list": "blog", "email": "sid@example.com", "sent": 3},
        {"list": "podcast", "email": "sid@example.com", "sent": 3},
    ]
    out = run("report", "--by", "silent").output
    assert out.startswith("list     silent\nblog     1\npodcast  1\n")
    assert "Silent: mailed 3+ times (LISTKIT_SILENT_AFTER), no purchase, no click." in out
    csv_out = run("report", "--by", "silent", "--csv").output
    assert csv_out.splitlines() == [
        "list,email,sent",
        "blog,sid@example.com,3",
        "podcast,sid@example.com,3",
    ]


def test_lists_prune_silent_dry_run_changes_nothing(silent_world, run):
    out = run("lists", "prune", "blog", "--silent", "--dry-run").output
    assert out == (
        "  sid@example.com (3 sent)\n"
        "1 members of blog would be pruned (mailed 3+ times with no purchase and no click); "
        "nothing changed.\n"
    )
    assert silent_by_list(silent_world.db, 3)[0]["silent"] == 1


def test_lists_prune_silent_moves_them_out_with_a_reason_and_keeps_their_history(silent_world, run):
    assert run("lists", "prune", "blog", "--silent", "--yes").output == (
        "Pruned 1 members of blog (mailed 3+ times with no purchase and no click); "
        "their history stays.\n"
    )
    db = silent_world.db
    status = db.execute(
        """SELECT l.slug, m.status, m.status_reason FROM memberships m
           JOIN lists l ON l.id = m.list_id JOIN subscribers s ON s.id = m.subscriber_id
           WHERE s.email = 'sid@example.com' ORDER BY l.slug"""
    ).fetchall()
    assert status == [
        ("blog", "pruned", "silent: mailed 3+ times, no purchase, no click"),
        ("podcast", "active", None),
    ]
    assert db.execute(
        "SELECT COUNT(*) FROM deliveries WHERE subscriber_id ="
        " (SELECT id FROM subscribers WHERE email = 'sid@example.com')"
    ).fetchone() == (3,)
    audience = {
        s["email"] for s, _l, _t in iter_audience(db, Campaign("next", "launch", ("blog",)))
    }
    assert audience == {"cal@example.com", "bea@example.com", "two@example.com"}


def test_lists_prune_asks_first_and_needs_silent(silent_world, run, monkeypatch):
    from listkit.cli import output

    result = run("lists", "prune", "blog", "--silent", ok=False)
    assert result.output == (
        "Error: not a terminal, so nobody can confirm: run "
        "`listkit lists prune blog --silent --yes`\n"
    )
    monkeypatch.setattr(output, "stdin_is_terminal", lambda: True)
    result = run("lists", "prune", "blog", "--silent", input="n\n", ok=False)
    assert result.exit_code == 1 and "Aborted" in result.output
    assert silent_by_list(silent_world.db, 3)[0]["silent"] == 1
    result = run("lists", "prune", "blog", ok=False)
    assert result.exit_code == 2 and "say what to prune: --silent" in result.output


def test_a_malformed_silent_setting_is_an_error_naming_it(run, workspace):
    (workspace / ".env").write_text((workspace / ".env").read_text() + "LISTKIT_SILENT_AFTER=x\n")
    run("lists", "create", "blog")
    result = run("lists", "prune", "blog", "--silent", ok=False)
    assert result.output == (
        "Error: LISTKIT_SILENT_AFTER must be a whole number of messages, not 'x'\n"
    )


def test_the_html_report_has_where_buyers_come_from_and_its_data(world, run, tmp_path):
    import re

    path = tmp_path / "r.html"
    run("report", "--html", str(path))
    html = path.read_text()
    assert "<h2>Where buyers come from: by signup source</h2>" in html
    assert "<h2>Where buyers come from: by signup month</h2>" in html
    raw = re.search(r'<script type="application/json" id="listkit-insights">(.*?)</script>', html)
    data = json.loads(raw.group(1))
    assert data["by_source"] == json.loads(json.dumps(buyers_by(world.db, "source")))


def test_adding_a_pruned_member_again_says_so_and_keeps_it_out(silent_world, run):
    run("lists", "prune", "blog", "--silent", "--yes")
    out = run("subscribers", "add", "sid@example.com", "--list", "blog").output
    assert out == "sid@example.com was pruned from blog as silent: not made active again.\n"
    assert silent_world.db.execute(
        """SELECT m.status FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
           JOIN lists l ON l.id = m.list_id WHERE s.email = 'sid@example.com' AND l.slug = 'blog'"""
    ).fetchone() == ("pruned",)


@pytest.mark.parametrize("by", ["source", "signup-month"])
def test_report_csv_by_source_or_month_gives_a_group_without_revenue_an_empty_currency(
    world, run, by
):
    # A group nobody bought in ended the CSV in a KeyError: ''.
    world.list("blog", "eve@example.com")
    origin(world.db, "eve@example.com", "api", "2026-05-01T10:00:00+00:00")
    lines = run("report", "--by", by, "--csv").output.splitlines()
    assert lines[0] == f"{by},subscribers,buyers,orders,currency,revenue,revenue_per_subscriber"
    key = "api" if by == "source" else "2026-05"
    assert f"{key},1,0,0,,0," in lines
