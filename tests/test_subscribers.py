import json

import pytest

from listkit.addresses import email_key, normalize_address
from listkit.errors import InputError


@pytest.fixture
def blog(run):
    run("lists", "create", "blog")
    run("lists", "create", "shop")


def test_add_then_show_a_subscriber_with_fields(run, blog):
    out = run(
        "subscribers",
        "add",
        " Ann@Example.COM ",
        "--list",
        "blog",
        "--name",
        "Ann",
        "--field",
        "plan=pro",
        "--field",
        "city=Köln",
    ).output
    assert out == "Added Ann@example.com to blog.\n"
    shown = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert shown["email"] == "Ann@example.com"
    assert shown["name"] == "Ann"
    assert shown["fields"] == {"plan": "pro", "city": "Köln"}
    assert [(m["list"], m["status"]) for m in shown["lists"]] == [("blog", "active")]
    assert "list blog: active" in run("subscribers", "show", "ANN@example.com").output


def test_adding_again_updates_and_joining_another_list_is_one_subscriber(run, blog, ws):
    run("subscribers", "add", "a@example.com", "--list", "blog")
    assert "Updated" in run("subscribers", "add", "A@EXAMPLE.com", "--list", "blog").output
    assert "already known" in run("subscribers", "add", "a@example.com", "--list", "shop").output
    assert ws.db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 1


def test_add_rejects_an_invalid_address(run, blog):
    result = run("subscribers", "add", "not-an-address", "--list", "blog", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: An email address must have an @-sign")


def test_add_to_a_missing_list_names_it(run):
    result = run("subscribers", "add", "a@example.com", "--list", "nope", ok=False)
    assert result.output == "Error: no list named 'nope': see `listkit lists ls`\n"


def test_bad_field_option_is_a_usage_error(run, blog):
    result = run("subscribers", "add", "a@example.com", "--list", "blog", "--field", "x", ok=False)
    assert result.exit_code == 2
    assert "--field takes key=value, not 'x'" in result.output


def test_subscribers_ls_in_json_and_csv(run, blog):
    run("subscribers", "add", "a@example.com", "--list", "blog", "--name", "A")
    run("subscribers", "add", "b@example.com", "--list", "blog", "--field", "k=v")
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert [(r["email"], r["status"]) for r in rows] == [
        ("a@example.com", "active"),
        ("b@example.com", "active"),
    ]
    csv_out = run("subscribers", "ls", "--list", "blog", "--csv").output.splitlines()
    assert csv_out[0].startswith("email,name,status")
    assert csv_out[2].startswith("b@example.com,,active") and csv_out[2].endswith(
        '"{""k"": ""v""}"'
    )


def test_unsubscribe_from_one_list_keeps_the_others(run, blog, ws):
    run("subscribers", "add", "a@example.com", "--list", "blog")
    run("subscribers", "add", "a@example.com", "--list", "shop")
    assert run("unsubscribe", "a@example.com", "--list", "blog").output == (
        "Unsubscribed a@example.com from blog.\n"
    )
    shown = json.loads(run("subscribers", "show", "a@example.com", "--json").output)
    assert {m["list"]: m["status"] for m in shown["lists"]} == {
        "blog": "unsubscribed",
        "shop": "active",
    }
    assert shown["suppressed"] is None
    # Not made active again by a later add.
    out = run("subscribers", "add", "a@example.com", "--list", "blog").output
    assert out == "a@example.com unsubscribed from blog earlier: not made active again.\n"


def test_unsubscribe_from_everything_suppresses(run, blog):
    run("subscribers", "add", "a@example.com", "--list", "blog")
    run("subscribers", "add", "a@example.com", "--list", "shop")
    out = run("unsubscribe", "A@example.com").output
    assert out == (
        "Unsubscribed a@example.com from blog, shop.\n"
        "a@example.com is suppressed: no campaign will mail it.\n"
    )
    rows = json.loads(run("suppress", "ls", "--json").output)
    assert [(r["email"], r["reason"]) for r in rows] == [("a@example.com", "unsubscribed")]
    out = run("subscribers", "add", "a@example.com", "--list", "blog").output
    assert out == "a@example.com is suppressed: kept off blog, not made active.\n"


def test_suppressed_address_added_to_a_new_list_is_not_active(run, blog, ws):
    run("suppress", "add", "x@example.com", "--reason", "complaint")
    assert "is suppressed" in run("subscribers", "add", "x@example.com", "--list", "blog").output
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert [(r["email"], r["status"]) for r in rows] == [("x@example.com", "unsubscribed")]


def test_suppress_add_twice_and_ls(run):
    assert run("suppress", "add", "x@example.com").output == "Suppressed x@example.com (manual).\n"
    assert (
        run("suppress", "add", "X@example.com").output == "X@example.com was already suppressed.\n"
    )
    assert "x@example.com  manual" in run("suppress", "ls").output


def test_suppress_import_plain_lines_and_csv(run, tmp_path):
    plain = tmp_path / "bounces.txt"
    plain.write_text("a@example.com\n\nnot valid\nB@example.com\n")
    result = run("suppress", "import", str(plain), "--reason", "hard_bounce")
    assert result.output.startswith("2 suppressed, 0 already suppressed, 1 rejected")
    assert "line 3: " in result.output
    table = tmp_path / "s.csv"
    table.write_text("name,Email\nA,a@example.com\nC,c@example.com\n")
    summary = json.loads(run("suppress", "import", str(table), "--json").output)
    assert (summary["suppressed"], summary["already"], summary["rejected"]) == (1, 1, 0)


def test_show_unknown_subscriber(run):
    assert run("subscribers", "show", "nobody@example.com", ok=False).output == (
        "Error: no subscriber 'nobody@example.com'\n"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "x@localhost",
        "x@example.test",
        "a..b@example.com",
        ".a@example.com",
        "a@-example.com",
        "a@example",
        "a" * 65 + "@example.com",
        "josé@example.com",
        "a@bücher.de",
        '"quoted"@example.com',
        "a@[127.0.0.1]",
        "a@example.123",
        "  spaced@example.com ",
    ],
)
def test_fast_validation_agrees_with_email_validator(raw):
    from email_validator import EmailNotValidError, validate_email

    try:
        expected = validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got = normalize_address(raw)
    except InputError:
        got = None
    assert got == expected


def test_email_key_is_case_folded():
    assert email_key(" Ann@Example.COM ") == "ann@example.com"
    assert email_key("STRASSE@example.com") == email_key("strasse@EXAMPLE.com")


def test_suppress_add_accepts_every_reason_the_bounce_effects_use(run):
    result = run("suppress", "add", "full@example.com", "--reason", "soft_bounce")
    assert result.output == "Suppressed full@example.com (soft_bounce).\n"
    assert "full@example.com  soft_bounce" in run("suppress", "ls").output


def test_the_bounce_effects_suppress_only_with_known_reasons():
    from listkit.inbox import bounces
    from listkit.vocab import SUPPRESSION_REASONS

    used = {bounces.SUPPRESSION_REASONS[o] for o in (bounces.HARD, bounces.SOFT, bounces.COMPLAINT)}
    assert used <= set(SUPPRESSION_REASONS)


def test_a_one_click_link_used_twice_records_one_unsubscribe_event(run, ws):
    from listkit.mail.tracking import unsubscribe_url
    from tests.world import World

    world = World(ws.db)
    cid = world.campaign("c1")
    delivery = world.deliver(cid, "a@example.com", "blog")
    url = unsubscribe_url("https://lists.example.com", ws.settings.secret_key(), delivery["token"])
    run("unsubscribe", url)
    run("unsubscribe", url)
    events = ws.db.execute(
        "SELECT COUNT(*) FROM events WHERE delivery_id = ? AND kind = 'unsubscribe'",
        [delivery["id"]],
    ).fetchone()[0]
    assert events == 1


@pytest.mark.parametrize("typo", ["ann@example,com", "javascript:alert(1)", "ann.example.com"])
def test_unsubscribing_something_that_is_not_an_address_is_an_error_and_suppresses_nothing(
    run, ws, typo
):
    # A typo must not look like success while the real address stays mailable.
    result = run("unsubscribe", typo, ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {typo!r} is not an email address (")
    assert result.output.endswith("): nothing was unsubscribed\n")
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0


def test_an_errors_file_that_is_the_file_being_imported_is_refused_and_the_export_kept(
    run, ws, tmp_path
):
    run("lists", "create", "blog")
    export = tmp_path / "members.csv"
    export.write_text("email,name\nann@example.com,Ann\nnot-an-address,Bob\n")
    (tmp_path / "link.csv").symlink_to(export)
    for errors in (export, tmp_path / "link.csv"):
        result = run(
            "subscribers",
            "import",
            str(export),
            "--list",
            "blog",
            "--errors",
            str(errors),
            ok=False,
        )
        assert result.exit_code == 1
        assert result.output == (
            f"Error: --errors {errors} is the file being imported: name another file for the "
            "rejected rows; nothing was imported\n"
        )
    assert export.read_text() == "email,name\nann@example.com,Ann\nnot-an-address,Bob\n"
    assert ws.db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 0


def test_an_errors_file_over_the_database_is_refused_and_the_database_kept(run, workspace):
    run("lists", "create", "blog")
    export = workspace / "members.csv"
    export.write_text("email\nann@example.com\n")
    db = workspace / "listkit.db"
    result = run(
        "subscribers", "import", str(export), "--list", "blog", "--errors", str(db), ok=False
    )
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --errors {db} is this workspace's database: name another file\n"
    )
    assert "blog" in run("lists", "ls").output


def link_world(ws):
    """a@ on blog and shop; campaign c1 mailed a@ through blog; its one-click link."""
    from listkit.mail.tracking import unsubscribe_url
    from tests.world import World

    world = World(ws.db)
    world.list("shop", "a@example.com")
    delivery = world.deliver(world.campaign("c1"), "a@example.com", "blog")
    return unsubscribe_url("https://lists.example.com", ws.settings.secret_key(), delivery["token"])


def memberships(ws):
    return dict(
        ws.db.execute(
            """SELECT l.slug, m.status FROM memberships m JOIN lists l ON l.id = m.list_id"""
        ).fetchall()
    )


def test_unsubscribe_with_a_link_does_what_the_link_does_and_says_it_as_the_page_does(run, ws):
    url = link_world(ws)
    out = run("unsubscribe", url).output
    assert out == (
        "a@example.com: You are unsubscribed from Blog.\n"
        "  You left Blog.\n"
        "  This campaign and its follow-ups will not reach you, on any list.\n"
        "  You are still on Shop.\n"
        "  (listkit unsubscribe URL --everything: from every list, and suppressed)\n"
    )
    assert memberships(ws) == {"blog": "unsubscribed", "shop": "active"}
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0


def test_unsubscribe_with_a_link_and_everything_leaves_every_list_and_suppresses(run, ws):
    url = link_world(ws)
    out = run("unsubscribe", url, "--everything").output
    assert out == (
        "a@example.com: You are unsubscribed from everything.\n"
        "  You will receive nothing more from us, on any list.\n"
    )
    assert memberships(ws) == {"blog": "unsubscribed", "shop": "unsubscribed"}
    assert ws.db.execute("SELECT reason FROM suppressions").fetchall() == [("unsubscribed",)]


def test_everything_and_list_do_not_go_together_and_a_link_names_its_own_list(run, ws):
    url = link_world(ws)
    result = run("unsubscribe", "a@example.com", "--everything", "--list", "shop", ok=False)
    assert result.exit_code == 2
    assert "give --list or --everything, not both" in result.output
    result = run("unsubscribe", url, "--list", "shop", ok=False)
    assert result.exit_code == 2
    assert "a link unsubscribes from the list its message was sent through" in result.output
