"""Audience rules against a built world of subscribers, deliveries, clicks and sales."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from listkit.audience.audiences import matching_subscribers, rules_from_options, rules_from_table
from listkit.errors import InputError
from listkit.send.campaigns import Campaign, audience_breakdown, iter_audience, load_campaign
from tests.world import World


@pytest.fixture
def world(world: World) -> World:
    """ann, bob, cat, dan, eve on blog; cat, fay on customers; gus pending on blog.

    launch mailed ann, bob, cat and held dan out; bob clicked; eve's link was
    only fetched by a scanner. ann bought the Guide through her link under
    another address; cat bought the Guide, attributed to launch; fay bought the
    Course in May; eve's order was refunded in full.
    """
    w = world
    w.list("blog", "ann@example.com", "bob@example.com", "cat@example.com")
    w.list("blog", "dan@example.com", "eve@example.com")
    w.list("customers", "cat@example.com", "fay@example.com")
    w.list("blog", "gus@example.com", status="pending")
    w.list("podcast")
    launch = w.campaign("launch")
    d = {e: w.deliver(launch, f"{e}@example.com", "blog") for e in ("ann", "bob", "cat")}
    w.deliver(launch, "dan@example.com", "blog", state="held_out")
    eve = w.deliver(launch, "eve@example.com", "blog", state="failed")
    w.event(d["bob"]["id"], "click")
    w.event(eve["id"], "scanner")
    w.details("ann@example.com", fields={"plan": "pro"}, source="import:blog.csv")
    w.details("bob@example.com", fields={"plan": "free"}, source="import:blog.csv")
    w.details("cat@example.com", fields={"plan": "pro"}, source="form")
    w.details("ann@example.com", signup="2026-01-10T08:00:00+00:00")
    w.details("bob@example.com", signup="2026-03-05T08:00:00+00:00")
    w.details("cat@example.com", signup="2026-06-01 09:00:00")
    w.details("dan@example.com", signup="2026-09-30T23:59:00+00:00")
    w.details("eve@example.com", signup="2026-10-01T00:00:00+00:00")
    w.details("fay@example.com", signup="2025-12-24T00:00:00+00:00")
    w.sale(
        "ann.other@example.org",
        "2026-11-03T10:00:00+00:00",
        delivery_id=d["ann"]["id"],
        campaign_id=launch,
        offer="launch",
    )
    w.sale("cat@example.com", "2026-11-02T10:00:00+00:00", campaign_id=launch, offer="launch")
    w.sale("fay@example.com", "2026-05-01T10:00:00+00:00", product="Course", amount=9900)
    w.sale("eve@example.com", "2026-11-04T10:00:00+00:00", status="refunded")
    return w


def audience(db, *where: str, lists=("blog", "customers")) -> set[str]:
    campaign = Campaign(slug="next", offer="launch", lists=lists, where=rules_from_options(where))
    return {sub["email"].split("@")[0] for sub, _slug, _title in iter_audience(db, campaign)}


EVERYONE = {"ann", "bob", "cat", "dan", "eve", "fay"}


def test_without_rules_the_audience_is_the_active_members_of_the_lists(world):
    assert audience(world.db) == EVERYONE


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (["bought=anything"], {"ann", "cat", "fay"}),
        (["not_bought=anything"], {"bob", "dan", "eve"}),
        (["bought=product:Guide"], {"ann", "cat"}),
        (["bought=product:Course"], {"fay"}),
        (["bought=product:Course|product:Guide"], {"ann", "cat", "fay"}),
        (["not_bought=product:Guide"], {"bob", "dan", "eve", "fay"}),
        (["bought=offer:launch"], {"ann", "cat"}),
        (["bought=campaign:launch"], {"ann", "cat"}),
        (["not_bought=campaign:launch"], {"bob", "dan", "eve", "fay"}),
        (["mailed_by=launch"], {"ann", "bob", "cat"}),
        (["not_mailed_by=launch"], {"dan", "eve", "fay"}),
        (["clicked_in=launch"], {"bob"}),
        (["not_clicked_in=launch"], {"ann", "cat", "dan", "eve", "fay"}),
        (["field.plan=pro"], {"ann", "cat"}),
        (["field.plan=pro|free"], {"ann", "bob", "cat"}),
        (["source=import:blog.csv"], {"ann", "bob"}),
        (["source=form"], {"cat"}),
        (["signed_up_after=2026-06-01"], {"cat", "dan", "eve"}),
        (["signed_up_before=2026-06-01"], {"ann", "bob", "fay"}),
        (["signed_up_after=2026-03-01", "signed_up_before=2026-10-01"], {"bob", "cat", "dan"}),
        (["last_purchase_after=2026-11-01"], {"ann", "cat"}),
        (["last_purchase_before=2026-11-01"], {"fay"}),
    ],
)
def test_each_rule_selects_exactly_its_subscribers(world, rules, expected):
    assert audience(world.db, *rules) == expected


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (["mailed_by=launch", "not_bought=anything"], {"bob"}),
        (["mailed_by=launch", "not_bought=anything", "not_clicked_in=launch"], set()),
        (["field.plan=pro", "bought=campaign:launch", "source=form"], {"cat"}),
        (["not_mailed_by=launch", "not_bought=anything"], {"dan", "eve"}),
        (["bought=anything", "signed_up_before=2026-02-01"], {"ann", "fay"}),
        (
            ["field.plan=pro|free", "not_clicked_in=launch", "last_purchase_after=2026-11-01"],
            {"ann", "cat"},
        ),
    ],
)
def test_rules_combine_so_that_every_one_must_hold(world, rules, expected):
    assert audience(world.db, *rules) == expected


def test_a_pending_member_is_never_in_an_audience_whatever_the_rules(world):
    assert "gus" not in audience(world.db, "not_bought=anything", lists=("blog",))
    assert "gus" not in audience(world.db, "not_mailed_by=launch", lists=("blog",))


def test_a_suppressed_subscriber_stays_out_of_an_audience_its_rules_select(world):
    with world.db.conn:
        world.db.execute(
            "INSERT INTO suppressions (key, email, reason, created) VALUES (?, ?, 'manual', ?)",
            ["bob@example.com", "bob@example.com", "2026-11-05"],
        )
    assert audience(world.db, "clicked_in=launch") == set()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "mailed_by=relaunch",
            "rule mailed_by=relaunch: no campaign 'relaunch' has been sent (campaigns: launch)",
        ),
        (
            "bought=campaign:nope",
            "rule bought=campaign:nope: no campaign 'nope' has been sent (campaigns: launch)",
        ),
        (
            "not_bought=product:Atlas",
            "rule not_bought=product:Atlas: no product 'Atlas' in the offers or the recorded sales",
        ),
        (
            "bought=offer:spring",
            "rule bought=offer:spring: no offer 'spring' in the offers or the recorded sales",
        ),
        ("field.tier=gold", "rule field.tier=gold: no subscriber has a custom field 'tier'"),
        (
            "bought=everything",
            "--where: rule bought takes 'anything', 'product:NAME', 'offer:SLUG' or "
            "'campaign:SLUG', not 'everything'",
        ),
        (
            "signed_up_after=last week",
            "--where: rule signed_up_after: 'last week' is not a date such as 2026-11-01",
        ),
    ],
)
def test_a_rule_naming_something_unknown_is_an_error_naming_it(world, rule, message):
    with pytest.raises(InputError) as e:
        audience(world.db, rule)
    assert str(e.value) == message


def test_an_unknown_rule_name_is_an_error_listing_the_rules(world):
    with pytest.raises(InputError, match=r"^--where: unknown rule 'purchased' \(rules: bought, "):
        rules_from_options(["purchased=anything"])


def test_a_campaign_file_where_table_holds_rules_and_custom_fields(tmp_path):
    (tmp_path / "pro.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\n[where]\nnot_bought = "anything"\n'
        'mailed_by = ["launch", "spring"]\nsigned_up_after = 2026-01-01\n'
        '[where.field]\nplan = "pro"\n'
    )
    c = load_campaign(tmp_path, "pro")
    assert [r.label for r in c.where] == [
        "not_bought=anything",
        "mailed_by=launch|spring",
        "signed_up_after=2026-01-01",
        "field.plan=pro",
    ]


def test_a_where_that_is_not_a_table_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"pro.toml: \[where\]: must be a table of rules"):
        rules_from_table("not_bought", f"{tmp_path / 'pro.toml'}: [where]")


def test_the_breakdown_counts_each_rule_alone_and_with_those_before_it_per_list(world):
    campaign = Campaign(
        slug="next",
        offer="launch",
        lists=("blog", "customers"),
        where=rules_from_options(["not_bought=anything", "mailed_by=launch"]),
    )
    assert audience_breakdown(world.db, campaign) == {
        "lists": 6,
        "rules": [
            {"rule": "not_bought=anything", "alone": 3, "with_previous": 3},
            {"rule": "mailed_by=launch", "alone": 3, "with_previous": 1},
        ],
        "per_list": {"blog": 1, "customers": 0},
        "total": 1,
    }


def test_subscribers_matching_rules_can_be_seen_before_mailing_them(world):
    rows = matching_subscribers(world.db, rules_from_options(["field.plan=pro"]))
    assert [(r["email"], r["lists"], r["signed_up"]) for r in rows] == [
        ("ann@example.com", "blog", "2026-01-10"),
        ("cat@example.com", "blog customers", "2026-06-01"),
    ]
    on_customers = matching_subscribers(
        world.db, rules_from_options(["bought=anything"]), "customers"
    )
    assert [r["email"] for r in on_customers] == ["cat@example.com", "fay@example.com"]


def test_subscribers_ls_where_shows_the_audience_a_rule_selects(world, run):
    out = run("subscribers", "ls", "--where", "mailed_by=launch", "--where", "not_bought=anything")
    assert "bob@example.com" in out.output
    assert "ann@example.com" not in out.output
    assert "1 subscribers match." in out.output
    data = json.loads(run("subscribers", "ls", "--where", "clicked_in=launch", "--json").output)
    assert [r["email"] for r in data] == ["bob@example.com"]


def test_subscribers_ls_with_an_unknown_campaign_is_a_one_line_error(world, run):
    result = run("subscribers", "ls", "--where", "clicked_in=relaunch", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: rule clicked_in=relaunch: no campaign 'relaunch' has been sent "
        "(campaigns: launch)\n"
    )


def test_campaigns_check_prints_the_audience_per_rule_and_per_list(world, run, workspace):
    (workspace / "campaigns" / "winback.toml").write_text(
        'offer = "launch"\nlists = ["blog", "customers"]\n'
        '[where]\nnot_bought = "anything"\nmailed_by = "launch"\n'
    )
    out = run("campaigns", "check", "winback").output
    assert "  lists before the rules: 6 recipients\n" in out
    assert "  rule not_bought=anything: 3 alone, 3 with the rules above\n" in out
    assert "  rule mailed_by=launch: 3 alone, 1 with the rules above\n" in out
    assert "  blog: 1 recipients\n  customers: 0 recipients\n" in out
    assert "OK: 1 messages render" in out


def test_campaigns_check_with_a_rule_naming_an_unknown_field_is_an_error(world, run, workspace):
    (workspace / "campaigns" / "winback.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\n[where.field]\ncountry = "NZ"\n'
    )
    result = run("campaigns", "check", "winback", ok=False)
    assert result.output == (
        "Error: rule field.country=NZ: no subscriber has a custom field 'country'\n"
    )


def test_a_subscriber_on_two_lists_is_targeted_once_through_the_first_the_campaign_names(world):
    def via(lists):
        campaign = Campaign(slug="next", offer="launch", lists=lists)
        return {sub["email"]: slug for sub, slug, _t in iter_audience(world.db, campaign)}

    assert via(("customers", "blog"))["cat@example.com"] == "customers"
    assert via(("blog", "customers"))["cat@example.com"] == "blog"
    assert len(via(("blog", "customers"))) == 6


def test_exclude_lists_keep_their_members_out_whatever_the_rules(world):
    campaign = Campaign(
        slug="next",
        offer="launch",
        lists=("blog",),
        exclude_lists=("customers",),
        where=rules_from_options(["bought=anything"]),
    )
    assert {s["email"] for s, _l, _t in iter_audience(world.db, campaign)} == {"ann@example.com"}


def test_subscribers_ls_where_csv_never_hands_a_spreadsheet_a_formula(world, run):
    with world.db.conn:
        world.db.execute(
            "UPDATE subscribers SET name = '=HYPERLINK(\"x\")' WHERE email = ?", ["bob@example.com"]
        )
    out = run("subscribers", "ls", "--where", "clicked_in=launch", "--csv").output
    assert "'=HYPERLINK" in out
    assert ",=HYPERLINK" not in out


def test_a_product_an_offer_sells_is_known_before_any_sale_of_it(run, workspace):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    (workspace / "campaigns" / "first.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\n'
        '[where]\nnot_bought = "product:The Field Guide to Selling (ebook)"\n'
    )
    out = run("campaigns", "check", "first").output
    assert "  rule not_bought=product:The Field Guide to Selling (ebook): 1 alone" in out
    listed = run(
        "subscribers", "ls", "--where", "not_bought=product:The Field Guide to Selling (ebook)"
    ).output
    assert "ann@example.com" in listed


def readme_example(name: str) -> str:
    """The TOML block of docs/selling.md that starts with the comment ``# campaigns/NAME``."""
    readme = (Path(__file__).parent.parent / "docs" / "selling.md").read_text()
    start = readme.index(f"```toml\n# campaigns/{name}\n") + len("```toml\n")
    return readme[start : readme.index("```", start)]


def test_the_readmes_winback_example_checks_as_written_with_a_field_rule_over_two_lists(
    world, run, workspace
):
    # fay (customers) has no custom fields: her field rule is neither true nor false.
    world.campaign("launch-reminder")
    (workspace / "campaigns" / "winback.toml").write_text(readme_example("winback.toml"))
    out = run("campaigns", "check", "winback").output
    assert out.splitlines()[1:] == [
        "  lists before the rules: 6 recipients",
        "  rule not_bought=anything: 3 alone, 3 with the rules above",
        "  rule mailed_by=launch: 3 alone, 1 with the rules above",
        "  rule not_clicked_in=launch|launch-reminder: 5 alone, 0 with the rules above",
        "  rule signed_up_after=2025-01-01: 6 alone, 0 with the rules above",
        "  rule field.plan=yearly: 0 alone, 0 with the rules above",
        "  blog: 0 recipients",
        "  customers: 0 recipients",
        "OK: 0 messages render; ready to send.",
    ]


def test_a_field_rule_counts_a_subscriber_without_the_field_as_not_matching(world):
    campaign = Campaign(
        slug="next",
        offer="launch",
        lists=("blog", "customers"),
        where=rules_from_options(["field.plan=pro"]),
    )
    b = audience_breakdown(world.db, campaign)
    assert b["rules"] == [{"rule": "field.plan=pro", "alone": 2, "with_previous": 2}]
    assert b["per_list"] == {"blog": 2, "customers": 0}


def test_subscribers_ls_where_prints_booleans_as_json_does_not_as_python(world, run):
    # The table and the CSV said False (Python's spelling); --json says false.
    run("suppress", "add", "bob@example.com")
    args = ("subscribers", "ls", "--where", "mailed_by=launch")
    header, *lines = run(*args).output.splitlines()[:-1]
    suppressed = header.index("suppressed")
    cells = {line.split()[0]: line[suppressed:].split()[0] for line in lines}
    assert (cells["ann@example.com"], cells["bob@example.com"]) == ("false", "true")
    data = {r["email"]: r["suppressed"] for r in json.loads(run(*args, "--json").output)}
    assert (data["ann@example.com"], data["bob@example.com"]) == (False, True)
    csv_lines = run(*args, "--csv").output.splitlines()
    assert csv_lines[0].split(",")[5] == "suppressed"
    column = {line.split(",")[0]: line.split(",")[5] for line in csv_lines[1:]}
    assert set(column.values()) == {"false", "true"}
    assert column == cells
    assert "False" not in run(*args).output + run(*args, "--csv").output
