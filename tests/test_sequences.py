"""Follow-ups sent by `send --due` to the first campaign's recipients who did not buy."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

from listkit.workspace import Workspace
from tests.world import tokens

ADDRS = [f"r{i}@example.com" for i in range(12)]


def setup(run, workspace, port, *, holdout=0.3):
    run("lists", "create", "blog")
    for address in ADDRS:
        run("subscribers", "add", address, "--list", "blog")
    (workspace / "campaigns" / "open.toml").write_text(
        f'offer = "launch"\nlists = ["blog"]\nholdout = {holdout}\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    )


def followup(workspace, slug="reminder", follows="open", *, offer="launch", extra=""):
    (workspace / "campaigns" / f"{slug}.toml").write_text(
        f'offer = "{offer}"\nlists = ["blog"]\nfollows = "{follows}"\nafter = "2d"\n{extra}'
    )


def query(workspace, sql, params=()):
    ws = Workspace(workspace)
    try:
        with ws.db.conn:
            return ws.db.execute(sql, list(params)).fetchall()
    finally:
        ws.close()


def finished_ago(workspace, slug, **delta):
    at = (datetime.now(UTC) - timedelta(**delta)).isoformat()
    query(
        workspace, "UPDATE campaigns SET finished = ?, started = ? WHERE slug = ?", [at, at, slug]
    )


def states(workspace, slug):
    return dict(
        query(
            workspace,
            """SELECT s.email, d.state FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
               JOIN subscribers s ON s.id = d.subscriber_id WHERE c.slug = ?""",
            [slug],
        )
    )


def buy(run, email, order):
    run(
        "sales", "add", "--order", order, "--email", email, "--amount", "29.00", "--currency", "USD"
    )


def test_a_follow_up_goes_once_to_the_first_campaigns_recipients_who_did_not_buy(
    run, workspace, server
):
    controller, handler = server
    setup(run, workspace, controller.port)
    run("send", "open", "--yes")
    first = states(workspace, "open")
    mailed = sorted(e for e, s in first.items() if s == "sent")
    held = {e for e, s in first.items() if s == "held_out"}
    assert held and len(mailed) >= 3  # the world this test needs
    finished_ago(workspace, "open", days=2, hours=1)
    buy(run, mailed[0], "1001")
    buy(run, sorted(held)[0], "1002")  # a held-out buyer changes nothing
    followup(workspace)
    before = len(handler.messages)
    outputs = [run("send", "--due").output for _ in range(3)]  # cron, every few minutes
    assert outputs[0].startswith(f"reminder: this run {len(mailed) - 1} sent")
    assert outputs[1:] == ["", ""]
    got = [rcpt for _mid, rcpt, _data in handler.messages[before:]]
    assert sorted(got) == mailed[1:]  # each once; no buyer, nobody held out
    assert not held & set(got)


def test_a_follow_up_waits_until_after_has_passed_since_the_first_finished(run, workspace, server):
    controller, handler = server
    setup(run, workspace, controller.port, holdout=0)
    followup(workspace)
    assert run("send", "--due").output == ""  # the first has not been sent at all
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=1, hours=23)
    sent = len(handler.messages)
    assert run("send", "--due").output == ""
    assert len(handler.messages) == sent
    assert "waiting" not in states(workspace, "reminder").values()  # no outbox yet
    finished_ago(workspace, "open", days=2, minutes=1)
    assert run("send", "--due").output.startswith("reminder: this run 12 sent")


def test_a_follow_up_is_not_sent_after_its_offers_expiry(run, workspace, server):
    controller, handler = server
    setup(run, workspace, controller.port, holdout=0)
    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "ended")
    toml = workspace / "offers" / "ended" / "offer.toml"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    toml.write_text(toml.read_text().replace('expires = "2026-12-31"', f'expires = "{yesterday}"'))
    followup(workspace, offer="ended")
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=1)
    sent = len(handler.messages)
    out = run("send", "--due").output
    assert out == f"reminder: missed (its offer expired ({yesterday}); not sent)\n"
    assert run("send", "--due").output == ""
    assert len(handler.messages) == sent
    result = run("send", "reminder", "--yes", ok=False)
    assert "Error: campaign reminder: its offer expired" in result.output


def test_a_follow_up_later_than_max_late_is_missed(run, workspace, server):
    controller, handler = server
    setup(run, workspace, controller.port, holdout=0)
    followup(workspace, extra='max_late = "6h"\n')
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=7)
    sent = len(handler.messages)
    assert run("send", "--due").output.startswith("reminder: missed (due ")
    assert len(handler.messages) == sent


def test_a_follow_up_cannot_be_sent_by_hand_before_the_first_finished(run, workspace, server):
    controller, _handler = server
    setup(run, workspace, controller.port)
    followup(workspace)
    result = run("send", "reminder", "--yes", ok=False)
    assert result.output == (
        "Error: campaign reminder follows open, which has not finished sending: send open first\n"
    )


def test_a_follow_up_with_its_own_bought_rule_replaces_the_default(run, workspace, server):
    controller, handler = server
    setup(run, workspace, controller.port, holdout=0)
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=1)
    buy(run, "r3@example.com", "2001")
    # Thank the buyers instead: only those who bought.
    followup(workspace, slug="thanks", extra='[where]\nbought = "anything"\n')
    sent = len(handler.messages)
    assert run("send", "--due").output.startswith("thanks: this run 1 sent")
    assert [rcpt for _m, rcpt, _d in handler.messages[sent:]] == ["r3@example.com"]


def test_a_chain_follows_the_follow_up_not_the_first(run, workspace, server):
    controller, handler = server
    setup(run, workspace, controller.port, holdout=0)
    followup(workspace, extra="holdout = 0.5\n")
    followup(workspace, slug="last-day", follows="reminder")
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=1)
    run("send", "--due")
    second = states(workspace, "reminder")
    assert "held_out" in second.values()
    finished_ago(workspace, "reminder", days=2, hours=1)
    sent = len(handler.messages)
    run("send", "--due")
    got = sorted(rcpt for _m, rcpt, _d in handler.messages[sent:])
    assert got == sorted(e for e, s in second.items() if s == "sent")


def test_campaigns_check_says_what_a_follow_up_goes_to(run, workspace, server):
    controller, _handler = server
    setup(run, workspace, controller.port, holdout=0)
    followup(workspace)
    run("send", "open", "--yes")
    buy(run, "r0@example.com", "3001")
    out = run("campaigns", "check", "reminder").output
    assert (
        "  follows open, 2d after it finished: to its recipients (never its held-out group), "
        "who have bought nothing since it started\n"
    ) in out
    assert "  blog: 11 recipients\n" in out


def test_a_follow_up_without_after_is_an_error_naming_the_field(run, workspace):
    (workspace / "campaigns" / "r.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nfollows = "launch"\n'
    )
    result = run("campaigns", "check", "r", ok=False)
    assert result.output == (
        f"Error: {workspace / 'campaigns' / 'r.toml'}: a follow-up needs field after: how "
        "long after launch finished sending, e.g. after = '2d'\n"
    )


def test_campaigns_ls_shows_when_a_follow_up_goes(run, workspace):
    rows = {r["campaign"]: r for r in json.loads(run("campaigns", "ls", "--json").output)}
    assert rows["launch-reminder"]["send_at"] == "3d after launch"
    assert rows["launch-reminder"]["state"] == "follow-up"
    assert rows["launch-last-day"]["send_at"] == "2d after launch-reminder"


def test_a_follow_up_of_a_campaign_that_does_not_exist_is_an_error_naming_it(run, workspace):
    (workspace / "campaigns" / "r.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nfollows = "lanch"\nafter = "2d"\n'
    )
    result = run("campaigns", "check", "r", ok=False)
    assert result.output == (
        f"Error: {workspace / 'campaigns' / 'r.toml'}: field follows: no campaign 'lanch' in "
        f"{workspace / 'campaigns'} (campaigns: launch, launch-last-day, launch-reminder, r)\n"
    )


def test_campaigns_check_of_a_follow_up_says_when_its_first_has_not_finished(run, workspace):
    run("lists", "create", "blog")
    run("lists", "create", "customers")
    out = run("campaigns", "check", "launch-reminder").output
    assert (
        "  launch has not finished sending: its recipients, and so this audience, are not "
        "known yet\n"
    ) in out
    # Its messages render, but it is not ready to send: it waits for the first.
    assert "ready to send" not in out
    assert out.endswith("OK: 0 messages render; not due yet: waits for launch to finish sending.\n")


def test_campaigns_check_of_a_follow_up_says_when_it_is_due(run, workspace, server):
    controller, _handler = server
    setup(run, workspace, controller.port, holdout=0)
    followup(workspace)
    run("send", "open", "--yes")
    out = run("campaigns", "check", "reminder").output
    assert "OK: 12 messages render; not due yet: due " in out
    finished_ago(workspace, "open", days=2, hours=1)
    assert run("campaigns", "check", "reminder").output.endswith(
        "OK: 12 messages render; ready to send.\n"
    )
    finished_ago(workspace, "open", days=3)
    assert run("campaigns", "check", "reminder").output.endswith(
        "ago, more than max_late 6h; not sent.\n"
    )


# --- a reader's "no" to a campaign stops its follow-ups, on every list ------------


OTHERS = ["r0@example.com", "r1@example.com", "r2@example.com"]


def two_lists(run, workspace, port, followup_lists=("blog", "customers")):
    """blog: r0, r1, two; customers: two, r2. `open` (to blog, customers: two@ through
    blog) and the `reminder` that follows it, to ``followup_lists`` in that order."""
    run("lists", "create", "blog")
    run("lists", "create", "customers")
    for address, lst in [
        ("r0@example.com", "blog"),
        ("r1@example.com", "blog"),
        ("two@example.com", "blog"),
        ("two@example.com", "customers"),
        ("r2@example.com", "customers"),
    ]:
        run("subscribers", "add", address, "--list", lst)
    (workspace / "campaigns" / "open.toml").write_text(
        'offer = "launch"\nlists = ["blog", "customers"]\n'
    )
    (workspace / "campaigns" / "reminder.toml").write_text(
        f'offer = "launch"\nlists = {json.dumps(list(followup_lists))}\nfollows = "open"\n'
        'after = "2d"\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    )


def one_click(workspace, slug, email):
    """The reader presses their mail client's Unsubscribe on the message `slug` sent them."""
    from starlette.testclient import TestClient

    from listkit.mail.tracking import unsubscribe_url
    from listkit.web import create_app

    ws = Workspace(workspace)
    try:
        token = tokens(ws.db, slug)[email]
        path = unsubscribe_url("", ws.settings.secret_key(), token)
        with TestClient(create_app(ws)) as client:
            r = client.post(
                path,
                content="List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        assert r.status_code == 200
        return r.text
    finally:
        ws.close()


def test_a_one_click_no_to_a_campaign_keeps_its_follow_up_from_a_reader_on_another_list(
    run, workspace, server
):
    controller, handler = server
    two_lists(run, workspace, controller.port)
    run("send", "open", "--yes")
    assert states(workspace, "open")["two@example.com"] == "sent"  # through blog
    one_click(workspace, "open", "two@example.com")
    finished_ago(workspace, "open", days=2, hours=1)
    before = len(handler.messages)
    assert run("send", "--due").output.startswith("reminder: this run 3 sent")
    got = sorted(rcpt for _m, rcpt, _d in handler.messages[before:])
    assert got == OTHERS
    # The list they left is left; the other list keeps them for other campaigns.
    lists = dict(
        query(
            workspace,
            """SELECT l.slug, m.status FROM memberships m JOIN lists l ON l.id = m.list_id
               JOIN subscribers s ON s.id = m.subscriber_id WHERE s.key = 'two@example.com'""",
        )
    )
    assert lists == {"blog": "unsubscribed", "customers": "active"}


def test_a_no_that_comes_after_a_follow_up_was_queued_is_honoured_when_it_is_claimed(
    run, workspace, server
):
    controller, handler = server
    # The follow-up targets two@ through customers, which the "no" leaves alone.
    two_lists(run, workspace, controller.port, ["customers", "blog"])
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=1)
    before = len(handler.messages)
    run("send", "--due", "--limit", "1", ok=False)  # the follow-up's outbox is built, one sent
    assert states(workspace, "reminder")["two@example.com"] == "pending"
    one_click(workspace, "open", "two@example.com")
    run("send", "--due")  # resumed
    got = [rcpt for _m, rcpt, _d in handler.messages[before:]]
    assert sorted(got) == OTHERS
    assert states(workspace, "reminder")["two@example.com"] == "skipped"


def test_a_no_to_the_first_campaign_also_stops_the_follow_up_of_the_follow_up(
    run, workspace, server
):
    controller, handler = server
    two_lists(run, workspace, controller.port, ["customers", "blog"])
    (workspace / "campaigns" / "last-day.toml").write_text(
        'offer = "launch"\nlists = ["customers", "blog"]\nfollows = "reminder"\nafter = "2d"\n'
    )
    run("send", "open", "--yes")
    finished_ago(workspace, "open", days=2, hours=1)
    run("send", "--due")
    assert states(workspace, "reminder")["two@example.com"] == "sent"  # through customers
    one_click(workspace, "open", "two@example.com")  # the first message, read late
    finished_ago(workspace, "reminder", days=2, hours=1)
    before = len(handler.messages)
    run("send", "--due")
    got = sorted(rcpt for _m, rcpt, _d in handler.messages[before:])
    assert got == OTHERS
