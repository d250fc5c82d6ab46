"""Attribution: the pure rules, then end to end through `listkit sales import/attribute`."""

import json

import pytest

from listkit.sales.attribution import (
    Touch,
    attribute_all,
    decide,
    in_window,
    last_touch,
    personal_coupon_prefix,
)
from tests.world import World

AT = "2026-11-02T10:00:00+00:00"


def touch(i, campaign=1, sent="2026-11-01T10:00:00+00:00", days=7, list_id=None):
    return Touch(
        delivery_id=i,
        campaign_id=campaign,
        list_id=list_id or 10 + i,
        sent_at=sent,
        attribution_days=days,
    )


# --- pure rules ---------------------------------------------------------------------------


def test_a_token_beats_a_coupon_which_beats_utm_which_beats_email():
    everything = dict(
        token=touch(1),
        personal_coupon=touch(2),
        coupon_campaigns=[3],
        utm_campaign=4,
        utm_list=44,
        buyer=[touch(5), touch(6, campaign=3), touch(7, campaign=4)],
    )
    a = decide(AT, **everything)
    assert (a.method, a.delivery_id) == ("token", 1)
    a = decide(AT, **{**everything, "token": None})
    assert (a.method, a.delivery_id) == ("coupon", 2)
    a = decide(AT, **{**everything, "token": None, "personal_coupon": None})
    assert (a.method, a.campaign_id, a.delivery_id) == ("coupon", 3, 6)
    a = decide(AT, **{**everything, "token": None, "personal_coupon": None, "coupon_campaigns": []})
    assert (a.method, a.campaign_id, a.delivery_id, a.list_id) == ("utm", 4, 7, 44)
    a = decide(AT, buyer=everything["buyer"])
    assert (a.method, a.delivery_id) == ("email", 7)
    assert decide(AT) == decide(AT, buyer=[])
    assert decide(AT).method == "none"


def test_a_campaign_coupon_from_someone_not_mailed_takes_the_list_from_utm_content():
    a = decide(AT, coupon_campaigns=[3], utm_campaign=3, utm_list=30, buyer=[touch(5)])
    assert (a.method, a.delivery_id, a.campaign_id, a.list_id) == ("coupon", None, 3, 30)
    # UTM parameters of another campaign say nothing about this coupon's list.
    a = decide(AT, coupon_campaigns=[3], utm_campaign=4, utm_list=40)
    assert (a.campaign_id, a.list_id) == (3, None)
    a = decide(AT, coupon_campaigns=[3], utm_list=30)
    assert (a.campaign_id, a.list_id) == (3, 30)


def test_a_campaign_coupon_ignores_the_buyers_message_sent_after_the_sale():
    later = touch(6, campaign=3, sent="2026-11-03T10:00:00+00:00")
    a = decide(AT, coupon_campaigns=[3], buyer=[later])
    assert (a.method, a.delivery_id, a.campaign_id) == ("coupon", None, 3)


def test_email_counts_only_after_the_message_and_within_the_window():
    sent = "2026-11-01T10:00:00+00:00"
    assert in_window("2026-11-01T10:00:00+00:00", sent, 7)
    assert in_window("2026-11-08T10:00:00+00:00", sent, 7)
    assert not in_window("2026-11-08T10:00:01+00:00", sent, 7)
    assert not in_window("2026-11-01T09:59:59+00:00", sent, 7)
    assert not in_window("2026-11-02T00:00:00+00:00", None, 7)
    assert decide("2026-11-09T00:00:00+00:00", buyer=[touch(1)]).method == "none"


def test_last_touch_is_the_most_recent_message_and_ties_go_to_the_highest_id():
    older = touch(1, sent="2026-11-01T10:00:00+00:00")
    newer = touch(2, sent="2026-11-03T10:00:00+00:00")
    assert last_touch("2026-11-04T00:00:00+00:00", [older, newer]) == newer
    assert last_touch("2026-11-02T00:00:00+00:00", [older, newer]) == older
    # An older message whose longer window still holds beats nothing.
    assert last_touch("2026-11-12T00:00:00+00:00", [touch(1, days=30), newer]).delivery_id == 1
    twin = touch(9, sent=newer.sent_at)
    assert last_touch("2026-11-04T00:00:00+00:00", [twin, newer, older]) == twin
    assert last_touch("2026-11-04T00:00:00+00:00", [older, newer, twin]) == twin


def test_a_personal_coupon_carries_the_first_characters_of_its_token():
    assert personal_coupon_prefix("LAUNCH30-ABCDEFG2") == "abcdefg2"
    assert personal_coupon_prefix(" launch-30-abcdefg2 ") == "abcdefg2"
    assert personal_coupon_prefix("LAUNCH30") is None
    assert personal_coupon_prefix("LAUNCH30-ABCDEFG1") is None  # 1 is not base32
    assert personal_coupon_prefix("LAUNCH30-ABC") is None


# --- end to end ---------------------------------------------------------------------------


@pytest.fixture
def launch(world: World):
    """Campaign t (coupon LAUNCH30) sent on 1 Nov to a, b, c (blog) and d (shop)."""
    w = world
    cid = w.campaign("t", coupon="LAUNCH30")
    d = {
        email: w.deliver(cid, email, lst, coupon_base="LAUNCH30")
        for email, lst in [
            ("a@example.com", "blog"),
            ("b@example.com", "blog"),
            ("c@example.com", "blog"),
            ("d@example.com", "shop"),
        ]
    }
    d["h@example.com"] = w.deliver(cid, "h@example.com", "blog", state="held_out")
    return w, cid, d


def imported(run, path, *args):
    return json.loads(run("sales", "import", str(path), "--json", *args).output)


def sales_by_order(run):
    return {r["order"]: r for r in json.loads(run("sales", "ls", "--json").output)}


def test_each_rule_end_to_end_and_recomputing_gives_the_same_answer(run, launch, tmp_path):
    _w, _cid, d = launch
    f = tmp_path / "s.csv"
    f.write_text(
        "order,email,amount,currency,date,coupon,token\n"
        # a's token, bought by someone else with the campaign coupon: token wins
        f"1,x@example.com,29,USD,2026-11-02T10:00:00Z,LAUNCH30,{d['a@example.com']['token']}\n"
        # b's personal coupon, typed in lower case, bought from another address
        f"2,y@example.com,29,USD,2026-11-02T10:00:00Z,{d['b@example.com']['coupon'].lower()},\n"
        # the campaign coupon, bought by d: the coupon names the campaign, d's delivery the list
        "3,d@example.com,29,USD,2026-11-02T10:00:00Z,launch30,\n"
        # c buys within the window, no token or coupon: email
        "4,C@Example.com,29,EUR,2026-11-05T10:00:00Z,,\n"
        # c buys again after the 7-day window: not attributed
        "5,c@example.com,29,EUR,2026-11-09T10:00:00Z,,\n"
        # d bought before the message was sent: not attributed
        "6,d@example.com,10,USD,2026-10-30T10:00:00Z,,\n"
        # the token of a held-out member (never mailed) names nothing
        f"7,stranger@example.com,10,USD,2026-11-02T10:00:00Z,,{d['h@example.com']['token']}\n"
    )
    s = imported(run, f)
    assert s["attributed"] == {"token": 1, "coupon": 2, "email": 1, "none": 3}
    rows = sales_by_order(run)
    assert [(o, rows[o]["method"], rows[o]["campaign"], rows[o]["list"]) for o in "1234567"] == [
        ("1", "token", "t", "blog"),
        ("2", "coupon", "t", "blog"),
        ("3", "coupon", "t", "shop"),
        ("4", "email", "t", "blog"),
        ("5", "none", None, None),
        ("6", "none", None, None),
        ("7", "none", None, None),
    ]
    assert rows["1"]["offer"] == "launch"
    out = run("sales", "attribute").output
    assert out == "7 sales: 1 by token, 2 by coupon, 1 by email, 3 by none\n"
    assert sales_by_order(run) == rows


def test_utm_names_campaign_and_list_when_there_is_no_token_or_coupon(run, launch, tmp_path):
    f = tmp_path / "s.csv"
    f.write_text(
        "order,email,amount,currency,date,utm_campaign,utm_content\n"
        "1,new@example.com,29,USD,2026-11-02T10:00:00Z,t,shop\n"
        "2,a@example.com,29,USD,2026-11-02T10:00:00Z,t,\n"
        "3,new@example.com,29,USD,2026-11-02T10:00:00Z,gone,blog\n"
    )
    s = imported(run, f)
    assert s["attributed"] == {"utm": 2, "none": 1}
    rows = sales_by_order(run)
    assert (rows["1"]["method"], rows["1"]["list"]) == ("utm", "shop")
    assert (rows["2"]["method"], rows["2"]["list"]) == ("utm", "blog")  # a's delivery
    assert rows["3"]["method"] == "none"


def test_a_later_campaign_reattributes_sales_when_attribution_runs_again(run, ws, launch):
    w, _cid, _d = launch
    run(
        "sales", "add", "--order", "L", "--email", "new@example.com", "--amount", "9",
        "--currency", "USD", "--at", "2026-11-20T12:00:00Z",
    )  # fmt: skip
    assert sales_by_order(run)["L"]["method"] == "none"
    later = w.campaign("later", offer="course", started="2026-11-20T09:00:00+00:00")
    w.deliver(later, "new@example.com", "shop", sent_at="2026-11-20T09:00:00+00:00")
    assert attribute_all(ws.db, ws.settings.secret_key()) == {"email": 1}
    row = sales_by_order(run)["L"]
    assert (row["method"], row["campaign"], row["offer"], row["list"]) == (
        "email",
        "later",
        "course",
        "shop",
    )
