"""Offer tests: stable variant draws, revenue statistics worked by hand, sending per variant."""

from __future__ import annotations

import json
import math

import pytest

from listkit.addresses import email_key
from listkit.errors import InputError
from listkit.send.campaigns import load_campaign
from listkit.send.variants import assign_variant, difference, judge, mean_interval, variant_report
from tests.world import World

Z = 1.959964


def test_the_variant_draw_is_stable_and_within_one_percent_of_the_split_on_100000():
    keys = [f"user{i}@example.com" for i in range(100_000)]
    split = (0.7, 0.3)
    first = [assign_variant("spring", k, ("a", "b"), split) for k in keys]
    again = [assign_variant("spring", k, ("a", "b"), split) for k in keys]
    assert first == again
    share_a = first.count("a") / len(keys)
    assert abs(share_a - 0.7) < 0.01
    three = [assign_variant("spring", k, ("a", "b", "c"), (0.5, 0.25, 0.25)) for k in keys]
    assert abs(three.count("c") / len(keys) - 0.25) < 0.01
    # Another campaign draws afresh: not the same people in the same group.
    other = [assign_variant("autumn", k, ("a", "b"), split) for k in keys[:1000]]
    assert other != first[:1000]


def test_the_variant_draw_does_not_follow_the_holdout_draw():
    from listkit.send.campaigns import held_out

    keys = [f"user{i}@example.com" for i in range(20_000)]
    held = [k for k in keys if held_out("spring", k, 0.5)]
    share = sum(assign_variant("spring", k, ("a", "b"), (0.5, 0.5)) == "a" for k in held)
    assert abs(share / len(held) - 0.5) < 0.02


def test_revenue_per_1000_and_its_interval_match_a_table_worked_by_hand():
    # Variant A: 4 delivered, revenue per subscriber 0, 0, 0, 4000 (minor units).
    # mean 1000; variance ((0-1000)^2 * 3 + 3000^2) / 3 = 4,000,000; se sqrt(4e6 / 4) = 1000.
    # per 1,000: 1,000,000; interval 1000 * (1000 -/+ 1.959964 * 1000).
    a = mean_interval(4, 4000, 4000**2)
    assert a["per_1000"] == 1_000_000
    assert a["var"] == 4_000_000
    assert a["ci95"] == pytest.approx([-959_964, 2_959_964])
    # Variant B: 4 delivered, nobody bought.
    b = mean_interval(4, 0, 0)
    assert (b["per_1000"], b["ci95"]) == (0, [0, 0])
    # A - B = 1000 a subscriber, se sqrt(4e6/4 + 0) = 1000: the interval holds zero.
    d = difference(a, b)
    assert d["difference_per_1000"] == 1_000_000
    assert d["ci95"] == pytest.approx([-959_964, 2_959_964])
    assert d["decided"] is False
    # Size per group for an interval this wide to exclude 1000: 1.959964^2 * 4e6 / 1000^2
    # = 15.37, so 16 each: 12 more in each group.
    assert d["more_deliveries"] == 24
    verdict = judge({"a": a, "b": b})
    assert (verdict["leader"], verdict["winner"], verdict["more_deliveries"]) == ("a", None, 24)


def test_a_winner_is_named_only_when_the_interval_excludes_zero():
    # A: 2000, 2000, 2000, 0 -> mean 1500, variance (3 * 500^2 + 1500^2) / 3 = 1,000,000.
    a = mean_interval(4, 6000, 3 * 2000**2)
    b = mean_interval(4, 0, 0)
    d = difference(a, b)
    # se sqrt(1e6 / 4) = 500: 1500 -/+ 979.98 -> per 1,000 520,018 to 2,479,982.
    assert d["ci95"] == pytest.approx([1000 * (1500 - Z * 500), 1000 * (1500 + Z * 500)])
    assert d["ci95"][0] == pytest.approx(520_018)
    assert d["decided"] is True and d["more_deliveries"] == 0
    assert judge({"b": b, "a": a})["winner"] == "a"


def test_the_statistics_agree_with_an_independent_computation():
    import statistics

    values_a = [0] * 180 + [2900] * 15 + [4900] * 5
    values_b = [0] * 190 + [2900] * 10
    a = mean_interval(len(values_a), sum(values_a), sum(v * v for v in values_a))
    b = mean_interval(len(values_b), sum(values_b), sum(v * v for v in values_b))
    z = statistics.NormalDist().inv_cdf(0.975)
    se = math.sqrt(
        statistics.variance(values_a) / len(values_a)
        + statistics.variance(values_b) / len(values_b)
    )
    diff = statistics.fmean(values_a) - statistics.fmean(values_b)
    d = difference(a, b)
    assert d["ci95"] == pytest.approx([1000 * (diff - z * se), 1000 * (diff + z * se)], rel=1e-6)
    assert d["decided"] is (diff - z * se > 0)


def test_equal_variants_have_no_winner_and_no_size_that_would_find_one():
    a = mean_interval(3, 2900, 2900**2)
    verdict = judge({"a": a, "b": mean_interval(3, 2900, 2900**2)})
    assert verdict["winner"] is None and verdict["more_deliveries"] is None


def test_the_report_by_variant_counts_revenue_per_subscriber_in_the_window(ws):
    w = World(ws.db)
    cid = w.campaign("spring", days=7)
    rows = []
    for i in range(4):
        rows.append(("a", w.deliver(cid, f"a{i}@example.com", "blog")))
        rows.append(("b", w.deliver(cid, f"b{i}@example.com", "blog")))
    w.deliver(cid, "h0@example.com", "blog", state="held_out")
    with ws.db.conn:
        ws.db.execute("UPDATE campaigns SET variants = ?", [json.dumps(["a", "b"])])
        for variant, d in rows:
            ws.db.execute("UPDATE deliveries SET variant = ? WHERE id = ?", [variant, d["id"]])
        for n, (email, at) in enumerate(
            [
                ("a3@example.com", "2026-11-02T10:00:00+00:00"),
                ("a3@example.com", "2026-11-03T10:00:00+00:00"),
                ("b1@example.com", "2026-11-20T10:00:00+00:00"),  # after the 7-day window
                ("h0@example.com", "2026-11-02T10:00:00+00:00"),
            ]
        ):
            ws.db.execute(
                """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
                   imported) VALUES ('t', ?, 2000, 'USD', ?, ?, ?, ?)""",
                [f"o{n}", at, email, email_key(email), at],
            )
    [test] = variant_report(ws.db)
    assert test["currency"] == "USD"
    assert [
        (v["variant"], v["delivered"], v["buyers"], v["revenue"]) for v in test["variants"]
    ] == [
        ("a", 4, 1, 4000),
        ("b", 4, 0, 0),
    ]
    assert test["variants"][0]["per_1000"] == 1_000_000
    assert test["held_out"]["held_out"] == 1 and test["held_out"]["revenue"] == 2000
    assert test["winner"] is None and test["more_deliveries"] == 24


def test_the_report_by_variant_shows_every_offer_test_of_the_period_however_far_apart(ws):
    # The first test's attribution window ended the period for the tests after it: a
    # test started a month later was left out of `report --by variant`, period or not.
    w = World(ws.db)
    started = ["2026-10-01T10:00:00+00:00", "2026-11-01T10:00:00+00:00"]
    for slug, at in zip(("october", "november"), started, strict=True):
        cid = w.campaign(slug, days=7, started=at)
        w.deliver(cid, f"{slug}@example.com", "blog")
        with ws.db.conn:
            ws.db.execute(
                "UPDATE campaigns SET variants = ? WHERE id = ?", [json.dumps(["a", "b"]), cid]
            )
            ws.db.execute("UPDATE deliveries SET variant = 'a' WHERE campaign_id = ?", [cid])
    assert [t["campaign"] for t in variant_report(ws.db)] == ["october", "november"]
    assert [t["campaign"] for t in variant_report(ws.db, until="2026-11-30")] == [
        "october",
        "november",
    ]
    assert [t["campaign"] for t in variant_report(ws.db, since="2026-10-15")] == ["november"]


def test_a_campaign_with_variants_sends_each_subscriber_the_offer_of_its_draw(
    run, workspace, server
):
    import shutil

    controller, handler = server
    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    toml = workspace / "offers" / "bundle" / "offer.toml"
    toml.write_text(
        toml.read_text().replace('subject = "', 'subject = "BUNDLE ').replace("29.00", "49.00")
    )
    run("lists", "create", "blog")
    addresses = [f"r{i}@example.com" for i in range(20)]
    for a in addresses:
        run("subscribers", "add", a, "--list", "blog")
    (workspace / "campaigns" / "ab.toml").write_text(
        'variants = ["launch", "bundle"]\nlists = ["blog"]\nholdout = 0.2\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )
    check = run("campaigns", "check", "ab").output
    assert "Campaign ab: variants launch, bundle" in check
    assert "variants (a stable draw per subscriber): launch 50%, bundle 50%" in check
    run("send", "ab", "--yes")
    from listkit.workspace import Workspace

    w = Workspace(workspace)
    try:
        rows = w.db.execute(
            "SELECT s.email, d.state, d.variant FROM deliveries d"
            " JOIN subscribers s ON s.id = d.subscriber_id"
        ).fetchall()
    finally:
        w.close()
    held = {e for e, s, _v in rows if s == "held_out"}
    assert held and all(v is None for _e, s, v in rows if s == "held_out")
    expected = {e: v for e, s, v in rows if s == "sent"}
    assert set(expected.values()) == {"launch", "bundle"}
    for e, v in expected.items():
        assert v == assign_variant("ab", email_key(e), ("launch", "bundle"), (0.5, 0.5))
    got = {}
    for _mid, rcpt, data in handler.messages:
        subject = next(line for line in data.decode().splitlines() if line.startswith("Subject:"))
        got[rcpt] = "bundle" if "BUNDLE" in subject else "launch"
    assert got == expected  # each once, its own offer, nobody held out
    by_offer = {
        r["offer"]: r for r in json.loads(run("report", "--by", "offer", "--json").output)["rows"]
    }
    assert {o: by_offer[o]["sent"] for o in ("launch", "bundle")} == {
        o: list(expected.values()).count(o) for o in ("launch", "bundle")
    }
    out = run("report", "--by", "variant").output
    assert "Offer test ab (no revenue yet, attribution window 7 days):" in out
    html = workspace / "r.html"
    run("report", "--html", str(html))
    assert (
        '<h2>Offer test ab</h2><div class="wide"><table class="variants" data-campaign="ab">'
        in html.read_text()
    )
    assert "(held out)" in out
    assert "No winner: the variants do not differ yet" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('variants = ["launch"]\n', "field variants needs two or more offers"),
        ('variants = ["launch", "launch"]\n', "field variants names an offer twice"),
        (
            'variants = ["launch", "b"]\nsplit = [1]\n',
            "field split needs one positive share per variant, e.g. [0.5, 0.5]",
        ),
        ('offer = "launch"\nsplit = [1, 1]\n', "field split needs variants"),
        ('offer = "launch"\ntest_share = 0.2\n', "test_share and test_wait need variants"),
        (
            'variants = ["launch", "b"]\ntest_share = 1.5\ntest_wait = "1d"\n',
            "field test_share must be a fraction above 0 and below 1 (e.g. 0.2)",
        ),
    ],
)
def test_a_malformed_variants_field_is_an_error_naming_the_file(tmp_path, body, message):
    (tmp_path / "ab.toml").write_text(body + 'lists = ["blog"]\n')
    with pytest.raises(InputError) as e:
        load_campaign(tmp_path, "ab")
    assert str(e.value) == f"{tmp_path / 'ab.toml'}: {message}"


def test_report_by_variant_json_carries_the_figures(run, ws):
    assert json.loads(run("report", "--by", "variant", "--json").output) == []


def test_test_then_send_sends_the_rest_the_leader_by_revenue_once(run, workspace, server):
    import shutil
    from datetime import UTC, datetime, timedelta

    from listkit.send.variants import in_test_part
    from listkit.workspace import Workspace

    controller, handler = server
    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    toml = workspace / "offers" / "bundle" / "offer.toml"
    toml.write_text(toml.read_text().replace('subject = "', 'subject = "BUNDLE '))
    run("lists", "create", "blog")
    addresses = [f"r{i}@example.com" for i in range(40)]
    for a in addresses:
        run("subscribers", "add", a, "--list", "blog")
    (workspace / "campaigns" / "ab.toml").write_text(
        'variants = ["launch", "bundle"]\nlists = ["blog"]\nholdout = 0.1\n'
        'test_share = 0.3\ntest_wait = "1d"\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )

    def db_rows(sql, params=()):
        w = Workspace(workspace)
        try:
            with w.db.conn:
                return w.db.execute(sql, list(params)).fetchall()
        finally:
            w.close()

    run("send", "ab", "--yes")
    rows = db_rows(
        "SELECT s.email, d.state, d.variant, d.part FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id"
    )
    test = {e: v for e, s, v, p in rows if p == "test"}
    rest = {e for e, s, v, p in rows if s == "reserved"}
    held = {e for e, s, v, p in rows if s == "held_out"}
    assert test and rest and held
    assert set(test) == {e for e, s, _v, _p in rows if s != "held_out"} - rest
    assert all(in_test_part("ab", email_key(e), 0.3) for e in test)
    assert sorted(r for _m, r, _d in handler.messages) == sorted(test)
    assert json.loads(run("status", "ab", "--json").output)["state"] == "testing"
    assert run("send", "--due").output == ""  # test_wait has not passed
    result = run("send", "ab", "--yes", ok=False)
    assert "Error: campaign ab is testing its variants: the rest gets the winner by " in (
        result.output
    )
    # The bundle's testers buy: it leads by revenue.
    for n, e in enumerate(e for e, v in test.items() if v == "bundle"):
        run(
            "sales",
            "add",
            "--order",
            f"b{n}",
            "--email",
            e,
            "--amount",
            "49.00",
            "--currency",
            "USD",
        )
    earlier = (datetime.now(UTC) - timedelta(days=1, minutes=1)).isoformat()
    db_rows("UPDATE campaigns SET finished = ? WHERE slug = 'ab'", [earlier])
    before = len(handler.messages)
    out = run("send", "--due").output
    assert out.startswith(f"ab: the rest ({len(rest)}) gets bundle, the ")
    assert run("send", "--due").output == ""
    got = [r for _m, r, _d in handler.messages[before:]]
    assert sorted(got) == sorted(rest)
    subjects = [
        next(line for line in d.decode().splitlines() if line.startswith("Subject:"))
        for _m, _r, d in handler.messages[before:]
    ]
    assert all("BUNDLE" in s for s in subjects)
    everyone = [r for _m, r, _d in handler.messages]
    assert len(everyone) == len(set(everyone)) and not held & set(everyone)
    assert json.loads(run("status", "ab", "--json").output)["state"] == "done"
    [report] = json.loads(run("report", "--by", "variant", "--json").output)
    assert sum(v["delivered"] for v in report["variants"]) == len(test)  # the test part only


def test_a_sale_from_a_variant_is_credited_to_that_variants_offer(ws):
    from listkit.sales.attribution import attribute_all
    from listkit.sales.reports import build_report

    w = World(ws.db)
    cid = w.campaign("ab", offer="launch")
    a = w.deliver(cid, "a@example.com", "blog")
    b = w.deliver(cid, "b@example.com", "blog")
    w.deliver(cid, "c@example.com", "blog")
    with ws.db.conn:
        ws.db.execute("UPDATE campaigns SET variants = ?", [json.dumps(["launch", "bundle"])])
        ws.db.execute("UPDATE deliveries SET variant = 'launch' WHERE id = ?", [a["id"]])
        ws.db.execute(
            "UPDATE deliveries SET variant = 'bundle' WHERE subscriber_id IN (SELECT id FROM"
            " subscribers WHERE email IN ('b@example.com', 'c@example.com'))"
        )
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key, token,
               imported) VALUES ('t', '1', 4900, 'USD', '2026-11-02T10:00:00+00:00',
               'b@example.com', 'b@example.com', ?, '2026-11-02')""",
            [b["token"]],
        )
    attribute_all(ws.db, ws.settings.secret_key())
    assert ws.db.execute("SELECT offer FROM sales").fetchone() == ("bundle",)
    rows = {r["offer"]: r for r in build_report(ws.db, "offer")["rows"]}
    assert (rows["bundle"]["sent"], rows["bundle"]["revenue"]) == (2, {"USD": 4900})
    assert (rows["launch"]["sent"], rows["launch"]["revenue"]) == (1, {})


def test_a_dry_run_of_an_offer_test_writes_each_recipient_its_own_variant(run, workspace, tmp_path):
    import shutil

    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    toml = workspace / "offers" / "bundle" / "offer.toml"
    toml.write_text(toml.read_text().replace('subject = "', 'subject = "BUNDLE '))
    run("lists", "create", "blog")
    for i in range(12):
        run("subscribers", "add", f"r{i}@example.com", "--list", "blog")
    (workspace / "campaigns" / "ab.toml").write_text(
        'variants = ["launch", "bundle"]\nlists = ["blog"]\n'
    )
    run("send", "ab", "--dry-run", str(tmp_path / "out"))
    seen = {}
    for eml in (tmp_path / "out").glob("*.eml"):
        text = eml.read_text()
        to = next(line for line in text.splitlines() if line.startswith("To:")).split()[-1]
        subject = next(line for line in text.splitlines() if line.startswith("Subject:"))
        seen[to.strip("<>")] = "bundle" if "BUNDLE" in subject else "launch"
    expected = {
        f"r{i}@example.com": assign_variant(
            "ab", f"r{i}@example.com", ("launch", "bundle"), (0.5, 0.5)
        )
        for i in range(12)
    }
    assert set(expected.values()) == {"launch", "bundle"}
    assert seen == expected


def test_the_variant_draw_is_the_same_in_another_process_with_another_hash_seed():
    import os
    import subprocess
    import sys

    keys = [f"user{i}@example.com" for i in range(2000)]
    code = (
        "from listkit.send.variants import assign_variant\n"
        f"keys = {keys!r}\n"
        "print(''.join(assign_variant('spring', k, ('a', 'b'), (0.5, 0.5)) for k in keys))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert other == "".join(assign_variant("spring", k, ("a", "b"), (0.5, 0.5)) for k in keys)


def test_a_top_up_after_the_rest_was_released_mails_newcomers_the_chosen_offer(
    run, workspace, server
):
    import shutil
    from datetime import UTC, datetime, timedelta

    from listkit.workspace import Workspace

    controller, handler = server
    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    run("lists", "create", "blog")
    for i in range(20):
        run("subscribers", "add", f"r{i}@example.com", "--list", "blog")
    (workspace / "campaigns" / "ab.toml").write_text(
        'variants = ["launch", "bundle"]\nlists = ["blog"]\ntest_share = 0.5\ntest_wait = "1h"\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )
    run("send", "ab", "--yes")
    w = Workspace(workspace)
    try:
        with w.db.conn:
            w.db.execute(
                "UPDATE campaigns SET finished = ?",
                [(datetime.now(UTC) - timedelta(hours=2)).isoformat()],
            )
    finally:
        w.close()
    assert "gets launch, no revenue from the test yet" in run("send", "--due").output
    for i in range(20, 40):
        run("subscribers", "add", f"r{i}@example.com", "--list", "blog")
    run("send", "ab", "--top-up", "--yes")
    got = [r for _m, r, _d in handler.messages]
    assert sorted(got) == sorted(f"r{i}@example.com" for i in range(40))  # each once
    assert json.loads(run("status", "ab", "--json").output)["counts"]["reserved"] == 0


def test_report_by_variant_with_a_malformed_date_is_a_one_line_error(run, ws):
    result = run("report", "--by", "variant", "--since", "last week", ok=False)
    assert result.output == "Error: --since 'last week' is not a date such as 2026-11-01\n"


def test_a_campaign_wide_coupon_sale_is_never_credited_to_a_variant_that_mailed_nobody(ws):
    # The campaign's own offer is its first variant; when the draw mailed that variant to
    # nobody, a coupon sale from a buyer the campaign did not mail went to it all the same.
    from listkit.sales.attribution import attribute_all
    from listkit.sales.reports import build_report

    w = World(ws.db)
    cid = w.campaign("ab", offer="launch", coupon="LAUNCH30")
    for email in ("a@example.com", "b@example.com"):
        w.deliver(cid, email, "blog")
    with ws.db.conn:
        ws.db.execute("UPDATE campaigns SET variants = ?", [json.dumps(["launch", "bundle"])])
        ws.db.execute("UPDATE deliveries SET variant = 'bundle'")
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
               coupon, imported) VALUES ('t', '1', 4900, 'USD', '2026-11-02T10:00:00+00:00',
               'new@example.com', 'new@example.com', 'LAUNCH30', '2026-11-02')"""
        )
    assert attribute_all(ws.db, ws.settings.secret_key()) == {"coupon": 1}
    assert ws.db.execute("SELECT offer FROM sales").fetchone() == ("bundle",)
    rows = {r["offer"]: r for r in build_report(ws.db, "offer")["rows"]}
    assert (rows["bundle"]["sent"], rows["bundle"]["revenue"]) == (2, {"USD": 4900})
    assert "launch" not in rows or (rows["launch"]["sent"], rows["launch"]["orders"]) == (0, 0)
    # Both variants mailed: the sale cannot say which, and goes to the campaign's offer.
    with ws.db.conn:
        ws.db.execute(
            "UPDATE deliveries SET variant = 'launch' WHERE subscriber_id ="
            " (SELECT id FROM subscribers WHERE email = 'a@example.com')"
        )
    attribute_all(ws.db, ws.settings.secret_key())
    assert ws.db.execute("SELECT offer FROM sales").fetchone() == ("launch",)


def test_check_and_send_warn_when_a_share_of_the_audience_rounds_to_nobody(run, workspace, server):
    import shutil

    from listkit.send.variants import in_test_part

    controller, handler = server
    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    run("lists", "create", "blog")
    readers = [f"r{i}@example.com" for i in range(6)]
    for a in readers:
        run("subscribers", "add", a, "--list", "blog")
    # The draws are stable: with these shares nobody lands in bundle, nobody in the test.
    assert {assign_variant("tiny", email_key(a), ("launch", "bundle"), (0.99, 0.01))
            for a in readers} == {"launch"}  # fmt: skip
    assert not any(in_test_part("untested", email_key(a), 0.02) for a in readers)
    (workspace / "campaigns" / "tiny.toml").write_text(
        'variants = ["launch", "bundle"]\nsplit = [0.99, 0.01]\nlists = ["blog"]\n'
    )
    (workspace / "campaigns" / "untested.toml").write_text(
        'variants = ["launch", "bundle"]\nlists = ["blog"]\ntest_share = 0.02\ntest_wait = "1d"\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )
    tiny = (
        "Warning: variant bundle (split 1%) gets none of the 6 readers: it cannot be "
        "judged; give it a larger share or drop it\n"
    )
    untested = (
        "Warning: test_share 2% puts none of the 6 readers in the test part: nobody tries "
        "the variants, and the rest gets launch untested\n"
    )
    assert tiny in run("campaigns", "check", "tiny").output
    assert untested in run("campaigns", "check", "untested").output
    assert "Warning" not in run("campaigns", "check", "untested").output.replace(untested, "")
    assert tiny in run("send", "tiny", "--yes").output
    assert len(handler.messages) == 6  # every reader got launch
    assert untested in run("send", "untested", "--yes").output
    assert len(handler.messages) == 6  # nobody in the test part: the rest waits


def test_a_coupon_sale_of_an_offer_test_that_delivered_nothing_is_credited_to_no_offer(ws):
    from listkit.sales.attribution import attribute_all
    from listkit.sales.reports import build_report

    w = World(ws.db)
    cid = w.campaign("ab", offer="launch", coupon="LAUNCH30")
    w.deliver(cid, "a@example.com", "blog", state="held_out")
    with ws.db.conn:
        ws.db.execute("UPDATE campaigns SET variants = ?", [json.dumps(["launch", "bundle"])])
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
               coupon, imported) VALUES ('t', '1', 4900, 'USD', '2026-11-02T10:00:00+00:00',
               'new@example.com', 'new@example.com', 'LAUNCH30', '2026-11-02')"""
        )
    assert attribute_all(ws.db, ws.settings.secret_key()) == {"coupon": 1}
    assert ws.db.execute("SELECT campaign_id, offer FROM sales").fetchone() == (cid, None)
    data = build_report(ws.db, "offer")
    rows = {r["offer"]: r for r in data["rows"]}
    assert rows["(no offer)"]["revenue"] == {"USD": 4900}
    assert rows["(no offer)"]["methods"] == {"coupon": 1}
    assert data["totals"]["unattributed"] == {"orders": 0, "revenue": {}}
