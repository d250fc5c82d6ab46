"""Names: one line, split into first and last, in templates, headers and set by hand."""

import json
from email import message_from_bytes
from email.policy import default

import pytest

from listkit.names import name_parts, split_name
from tests.test_offers import compose, write_offer


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Gina Ghost", ("Gina", "Ghost")),
        ("Mary Ann van Dyke", ("Mary", "Ann van Dyke")),
        ("Cher", ("Cher", None)),
        ("  Ann   Lee ", ("Ann", "Lee")),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_a_single_name_splits_at_its_first_space_as_ghost_does(name, parts):
    assert split_name(name) == parts


def test_stored_first_and_last_names_win_over_the_split_of_the_full_name():
    assert name_parts("Mary Ann Smith", "Mary Ann", "Smith") == ("Mary Ann", "Smith")
    assert name_parts("Kim", "Kim", None) == ("Kim", None)
    assert name_parts("Uma Smith", None, None) == ("Uma", "Smith")
    assert name_parts(None, None, None) == (None, None)


def test_templates_see_first_and_last_name_and_the_full_name(workspace):
    write_offer(
        workspace,
        text="Hi {{ subscriber.first_name }} / {{ subscriber.last_name }}"
        " / {{ subscriber.name }}\n",
    )
    stored = compose(
        workspace, {"name": "Mary Ann Smith", "first_name": "Mary Ann", "last_name": "Smith"}
    )
    assert stored.text.startswith("Hi Mary Ann / Smith / Mary Ann Smith\n")
    derived = compose(workspace, {"name": "Uma Smith"})
    assert derived.text.startswith("Hi Uma / Smith / Uma Smith\n")
    nameless = compose(workspace, {"name": None})
    assert nameless.text.startswith("Hi None / None / None\n")


def test_a_stored_name_with_a_line_break_renders_on_one_line_in_headers_and_body(workspace):
    write_offer(workspace, text="Dear {{ subscriber.name }}, from {{ subscriber.city }}\n")
    message = compose(
        workspace,
        {"name": "Ann\r\nBcc: x@example.com", "fields": {"city": "Paris\nBcc: y@example.com"}},
    )
    parsed = message_from_bytes(message.data, policy=default)
    assert parsed["Bcc"] is None
    assert parsed["To"] == '"Ann Bcc: x@example.com" <ann@example.com>'
    assert message.text.startswith("Dear Ann Bcc: x@example.com, from Paris\nBcc: y@example.com\n")


def test_a_field_with_a_line_break_reaches_the_subject_as_one_line(workspace):
    write_offer(
        workspace,
        toml='subject = "Deal for {{ subscriber.city }}"\nurl = "https://shop.example.com/x"\n'
        'product = "Guide"\nprice = "19.00"\ncurrency = "USD"\n',
    )
    message = compose(workspace, {"fields": {"city": "Paris\nBcc: x@example.com"}})
    parsed = message_from_bytes(message.data, policy=default)
    assert (parsed["Subject"], parsed["Bcc"]) == ("Deal for Paris Bcc: x@example.com", None)


def test_offers_check_passes_for_a_subscriber_stored_with_a_line_break_in_the_name(
    run, ws, workspace
):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    ws.db.execute(
        "UPDATE subscribers SET name = ? WHERE key = ?", ["Ann\nSmith", "ann@example.com"]
    )
    ws.db.conn.commit()
    out = run("offers", "check", "launch", "--list", "blog").output
    assert out == "Offer launch: renders for all 1 subscribers of blog.\n"


def test_offers_check_names_the_subscriber_and_the_command_that_fixes_a_refused_name(run, ws):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    sid = ws.db.execute("SELECT id FROM subscribers").fetchone()[0]
    ws.db.execute("UPDATE subscribers SET name = ?", ["=?UTF-8?Q?=0D=0A?=Bcc: x@example.com"])
    ws.db.conn.commit()
    result = run("offers", "check", "launch", "--list", "blog", ok=False)
    assert result.exit_code == 1
    assert (
        f"the name of subscriber {sid} hides a control character in an encoded-word: "
        f"set it with `listkit subscribers set {sid} --name 'NEW NAME'`"
    ) in result.output


def show(run, who):
    return json.loads(run("subscribers", "show", who, "--json").output)


def test_names_are_set_by_hand_by_address_or_by_id(run, ws):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog", "--name", "Ann Lee")
    out = run("subscribers", "set", "ann@example.com", "--first-name", "Annie").output
    assert out == "Updated ann@example.com: name 'Annie Lee' (first 'Annie', last 'Lee').\n"
    assert (show(run, "ann@example.com")["name"], show(run, "ann@example.com")["first_name"]) == (
        "Annie Lee",
        "Annie",
    )
    sid = ws.db.execute("SELECT id FROM subscribers").fetchone()[0]
    run("subscribers", "set", str(sid), "--name", "Ann\nvan Dyke", "--field", "plan=pro")
    ann = show(run, "ann@example.com")
    assert (ann["name"], ann["first_name"], ann["last_name"], ann["fields"]) == (
        "Ann van Dyke",
        "Ann",
        "van Dyke",
        {"plan": "pro"},
    )
    run("subscribers", "set", "ann@example.com", "--first-name", "Ann", "--last-name", "")
    ann = show(run, "ann@example.com")
    assert (ann["name"], ann["first_name"], ann["last_name"]) == ("Ann", "Ann", None)


def test_setting_a_name_for_nobody_is_an_error_naming_what_was_asked(run):
    result = run("subscribers", "set", "nobody@example.com", "--name", "X", ok=False)
    assert result.output == "Error: no subscriber 'nobody@example.com'\n"
    result = run("subscribers", "set", "42", "--name", "X", ok=False)
    assert result.output == "Error: no subscriber with id 42\n"
    result = run("subscribers", "set", "42", ok=False)
    assert result.exit_code == 2
    assert "give --name, --first-name, --last-name or --field" in result.output


def test_subscribers_add_takes_first_and_last_names(run):
    run("lists", "create", "blog")
    run(
        "subscribers",
        "add",
        "uma@example.com",
        "--list",
        "blog",
        "--first-name",
        "Uma",
        "--last-name",
        "Smith",
    )
    uma = show(run, "uma@example.com")
    assert (uma["name"], uma["first_name"], uma["last_name"]) == ("Uma Smith", "Uma", "Smith")


def test_a_campaign_greets_each_reader_by_the_first_name_their_export_gave(
    run, workspace, tmp_path, server
):
    from tests.test_send import setup_campaign

    controller, handler = server
    setup_campaign(run, workspace, controller.port, [])
    header = (
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,"
        "CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,"
        "EUID,NOTES,TAGS\n"
    )
    f = tmp_path / "members.csv"
    f.write_text(
        header + 'mary@example.com,"Mary Ann\n",Smith,2,2024-01-02 10:00:00' + "," * 14 + "\n"
    )
    run("subscribers", "import", str(f), "--list", "blog")
    write_offer(
        workspace,
        slug="launch",
        toml='subject = "{{ subscriber.first_name }}, a deal"\n'
        'url = "https://shop.example.com/x"\nproduct = "Guide"\nprice = "19.00"\n'
        'currency = "USD"\n',
        text="Hi {{ subscriber.first_name }} ({{ subscriber.name }}),\n",
    )
    (workspace / "offers" / "launch" / "html.j2").unlink()
    run("send", "t", "--yes")
    [(_, rcpt, data)] = handler.messages
    message = message_from_bytes(data, policy=default)
    assert (rcpt, message["To"], message["Subject"]) == (
        "mary@example.com",
        "Mary Ann Smith <mary@example.com>",
        "Mary Ann, a deal",
    )
    assert message.get_content().startswith("Hi Mary Ann (Mary Ann Smith),\r\n")
