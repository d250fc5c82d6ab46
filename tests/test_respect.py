"""Respect for the reader: the quiet period after a purchase and the frequency cap hold
selling messages back and then send them, or skip them with a reason at their deadline.

listkit's clock is moved through days (the `clock` fixture) between cron-like
`listkit send --due` calls, against a real SMTP server (aiosmtpd, in-process).
"""

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from listkit.config import ConfigError, Frequency, Settings
from listkit.db import ISO_SQL
from listkit.send.campaigns import load_campaign
from listkit.send.respect import Hold, Respect, deadline, sort_out
from listkit.vocab import FREQUENCY_CAP, QUIET_AFTER_PURCHASE
from listkit.workspace import Workspace
from tests.test_send_processes import listkit

READERS = [f"r{i}@example.com" for i in range(4)]


def setup_workspace(run, workspace, port, **settings):
    """A list `blog` of READERS, SMTP at ``port``, the given LISTKIT_* settings, no
    campaign of its own, and the offer `launch` without an expiry."""
    run("lists", "create", "blog")
    for address in READERS:
        run("subscribers", "add", address, "--list", "blog")
    env = (workspace / ".env").read_text()
    env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}?timeout=2")
    env += "".join(f"LISTKIT_{name.upper()}={value}\n" for name, value in settings.items())
    (workspace / ".env").write_text(env)
    for path in (workspace / "campaigns").glob("*.toml"):
        path.unlink()
    offer = workspace / "offers" / "launch" / "offer.toml"
    offer.write_text(
        "\n".join(x for x in offer.read_text().splitlines() if not x.startswith("expires"))
    )


def campaign(workspace, slug, send_at: datetime, max_late="10d", extra="", offer="launch"):
    (workspace / "campaigns" / f"{slug}.toml").write_text(
        f'offer = "{offer}"\nlists = ["blog"]\nsend_at = "{send_at.isoformat()}"\n'
        f'max_late = "{max_late}"\n{extra}'
    )


def sale(run, address: str, at: datetime, order: str = "o1") -> None:
    """``address`` bought something at ``at``."""
    run(
        "sales", "add", "--order", order, "--email", address, "--amount", "29.00",
        "--currency", "USD", "--at", at.isoformat(),
    )  # fmt: skip


def status(run, slug):
    return json.loads(run("status", slug, "--json").output)


def states(workspace, slug) -> dict[str, tuple]:
    """address -> (state, last_reply, next_attempt) of the campaign's rows."""
    ws = Workspace(workspace)
    try:
        return {
            email: tuple(rest)
            for email, *rest in ws.db.execute(
                f"""SELECT s.email, d.state, d.last_reply, {ISO_SQL.format("d.next_unix")}
                   FROM deliveries d
                   JOIN subscribers s ON s.id = d.subscriber_id JOIN campaigns c
                   ON c.id = d.campaign_id WHERE c.slug = ?""",
                [slug],
            )
        }
    finally:
        ws.close()


def test_the_quiet_period_holds_a_buyer_back_and_sends_once_it_is_over(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d")
    start = clock()
    sale(run, "r1@example.com", start - timedelta(days=2))
    campaign(workspace, "t", start)
    out = run("send", "--due").output
    assert out.startswith("t: this run 3 sent")
    assert "1 held back" in out
    assert handler.recipients() == {a: 1 for a in READERS if a != "r1@example.com"}
    state, reason, until = states(workspace, "t")["r1@example.com"]
    assert (state, reason) == ("held_back", QUIET_AFTER_PURCHASE)
    # Stored in whole seconds, the end of the hold rounded up.
    held_until = start - timedelta(days=2) + timedelta(days=7)
    assert datetime.fromisoformat(until) == held_until.replace(microsecond=0) + timedelta(
        seconds=1 if held_until.microsecond else 0
    )
    # Cron goes on every few hours: nothing to do, and nothing printed, until day 5.
    for _ in range(8):
        clock.move(hours=14)
        assert run("send", "--due").output == ""
    assert "r1@example.com" not in handler.recipients()
    assert status(run, "t")["state"] == "sending"
    assert status(run, "t")["held_back"] == [
        {"reason": QUIET_AFTER_PURCHASE, "messages": 1, "until": until}
    ]
    text = run("status", "t").output
    assert f"  held back: 1 (quiet after purchase), the last until {until[:10]} " in text
    overview = run("status").output.splitlines()
    assert overview[0].split()[-3:] == ["held", "back", "started"]
    assert overview[1].split()[:2] == ["t", "sending"] and overview[1].split()[-2] == "1"
    clock.move(hours=10)  # day 5 and 16 hours: the quiet period is over
    assert run("send", "--due").output.startswith("t: this run 1 sent")
    assert handler.recipients() == {a: 1 for a in READERS}
    assert status(run, "t")["state"] == "done"
    assert run("send", "--due").output == ""
    assert len(handler.messages) == 4


def test_a_purchase_while_held_back_for_the_cap_restarts_the_wait(run, workspace, server, clock):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="3d", frequency="1/24h")
    start = clock()
    campaign(workspace, "a", start)
    campaign(workspace, "b", start)
    run("send", "--due")
    assert states(workspace, "b")["r2@example.com"][:2] == ("held_back", FREQUENCY_CAP)
    clock.move(hours=12)
    sale(run, "r2@example.com", clock())
    clock.move(hours=13)  # the cap is over; r2's quiet period is not
    assert run("send", "--due").output.startswith("b: this run 3 sent")
    assert states(workspace, "b")["r2@example.com"][:2] == ("held_back", QUIET_AFTER_PURCHASE)
    clock.move(days=3)
    assert run("send", "--due").output.startswith("b: this run 1 sent")
    assert handler.recipients() == {a: 2 for a in READERS}


def test_the_frequency_cap_holds_the_second_selling_campaign_until_the_window_passes(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="1/24h")
    start = clock()
    campaign(workspace, "a", start)
    campaign(workspace, "b", start + timedelta(hours=2))
    assert run("send", "--due").output.startswith("a: this run 4 sent")
    clock.move(hours=3)
    out = run("send", "--due").output
    assert out.startswith("b: this run nothing")
    assert "4 held back" in out
    assert {s[:2] for s in states(workspace, "b").values()} == {("held_back", FREQUENCY_CAP)}
    clock.move(hours=12)
    assert run("send", "--due").output == ""
    clock.move(hours=10)  # 25 hours after a went out
    assert run("send", "--due").output.startswith("b: this run 4 sent")
    assert handler.recipients() == {a: 2 for a in READERS}
    assert status(run, "b")["state"] == "done"


def test_a_cap_of_two_lets_the_second_through_and_holds_the_third(run, workspace, server, clock):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="2/7d")
    start = clock()
    for slug in ("a", "b", "c"):
        campaign(workspace, slug, start)
    run("send", "--due")
    assert handler.recipients() == {a: 2 for a in READERS}
    assert {s[0] for s in states(workspace, "c").values()} == {"held_back"}
    clock.move(days=7, minutes=1)
    run("send", "--due")
    assert handler.recipients() == {a: 3 for a in READERS}


def test_a_message_that_cannot_fit_before_max_late_is_skipped_with_its_reason(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="1/24h")
    start = clock()
    campaign(workspace, "a", start)
    campaign(workspace, "b", start, max_late="6h")
    out = run("send", "--due").output
    assert "b: this run nothing" in out
    assert "4 skipped" in out
    assert handler.recipients() == {a: 1 for a in READERS}
    assert {s[:2] for s in states(workspace, "b").values()} == {("skipped", FREQUENCY_CAP)}
    shown = status(run, "b")
    assert shown["state"] == "done"
    assert (shown["held_back"], shown["skipped"]) == ([], {FREQUENCY_CAP: 4})
    assert "  skipped: 4 (frequency cap 4)\n" in run("status", "b").output
    report = run("report", "--by", "campaign").output
    assert (
        "Skipped for the reader (LISTKIT_QUIET_AFTER_PURCHASE, LISTKIT_FREQUENCY): "
        "b 4 (frequency cap 4)\n"
    ) in report
    page = workspace / "report.html"
    run("report", "--html", str(page))
    assert "<h2>Skipped for the reader</h2>" in page.read_text()
    assert "b 4 (frequency cap 4)" in page.read_text()
    data = json.loads(run("report", "--by", "campaign", "--json").output)
    assert data["skipped_for_reader"] == [
        {"campaign": "b", "list": "blog", "reason": FREQUENCY_CAP, "messages": 4}
    ]
    clock.move(days=2)
    assert run("send", "--due").output == ""
    assert handler.recipients() == {a: 1 for a in READERS}


def test_a_message_whose_offer_expires_in_the_quiet_period_is_skipped(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d")
    start = clock()
    flash = workspace / "offers" / "flash"
    flash.mkdir()
    for name in ("text.j2", "html.j2"):
        source = workspace / "offers" / "launch" / name
        if source.exists():
            (flash / name).write_text(source.read_text())
    expires = (start + timedelta(days=2)).date().isoformat()
    toml = (workspace / "offers" / "launch" / "offer.toml").read_text()
    (flash / "offer.toml").write_text(f'{toml}\nexpires = "{expires}"\n')
    sale(run, "r3@example.com", start - timedelta(days=1))
    campaign(workspace, "t", start, offer="flash")
    run("send", "--due")
    assert states(workspace, "t")["r3@example.com"][:2] == ("skipped", QUIET_AFTER_PURCHASE)
    assert handler.recipients() == {a: 1 for a in READERS if a != "r3@example.com"}
    assert status(run, "t")["skipped"] == {QUIET_AFTER_PURCHASE: 1}


def test_a_newsletter_that_sells_nothing_is_never_held_and_does_not_count(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d", frequency="1/24h")
    start = clock()
    sale(run, "r0@example.com", start - timedelta(hours=1))
    campaign(workspace, "news", start, extra="sells = false\n")
    campaign(workspace, "pitch", start)
    run("send", "--due")
    assert states(workspace, "news")["r0@example.com"][0] == "sent"
    # The newsletter used up nobody's cap: the pitch goes to all but the buyer.
    assert handler.recipients() == {a: 1 if a == "r0@example.com" else 2 for a in READERS}
    assert states(workspace, "pitch")["r0@example.com"][:2] == (
        "held_back",
        QUIET_AFTER_PURCHASE,
    )


def test_a_held_back_reader_who_unsubscribes_is_never_sent(run, workspace, server, clock):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="2d")
    start = clock()
    sale(run, "r2@example.com", start - timedelta(hours=1))
    campaign(workspace, "t", start)
    run("send", "--due")
    assert states(workspace, "t")["r2@example.com"][0] == "held_back"
    run("unsubscribe", "r2@example.com")
    clock.move(days=3)
    assert run("send", "--due").output.startswith("t: this run nothing")
    assert states(workspace, "t")["r2@example.com"][:2] == (
        "skipped",
        "suppressed or unsubscribed before sending",
    )
    assert "r2@example.com" not in handler.recipients()
    assert status(run, "t")["state"] == "done"


def test_a_campaign_sent_by_hand_is_finished_by_send_due_once_its_readers_may_have_it(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="1d")
    (workspace / "campaigns" / "t.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    sale(run, "r0@example.com", clock() - timedelta(hours=1))
    result = run("send", "t", "--yes")
    assert result.exit_code == 0  # held back is not a failure
    assert "1 held back (quiet after purchase) until" in result.output
    clock.move(hours=22, minutes=30)
    assert run("send", "--due").output == ""
    clock.move(hours=1)
    assert run("send", "--due").output.startswith("t: this run 1 sent")
    assert handler.recipients() == {a: 1 for a in READERS}


def test_without_either_setting_nothing_is_held(run, workspace, server, clock):
    controller, handler = server
    setup_workspace(run, workspace, controller.port)
    start = clock()
    sale(run, "r1@example.com", start - timedelta(hours=1))
    campaign(workspace, "a", start)
    campaign(workspace, "b", start)
    run("send", "--due")
    assert handler.recipients() == {a: 2 for a in READERS}


# --- the check itself --------------------------------------------------------------------


def test_sort_out_reads_a_batch_with_a_few_queries_not_one_per_reader(ws, world):
    """The check reads the sales, the recent campaigns and their deliveries once for
    the whole batch."""
    w = world
    w.list("blog", *[f"q{i}@example.com" for i in range(50)])
    ids = [r[0] for r in ws.db.execute("SELECT id FROM subscribers ORDER BY id")]
    statements = []
    ws.db.conn.set_trace_callback(statements.append)
    try:
        rule = Respect(timedelta(days=7), Frequency(1, timedelta(days=1)), (1, 2))
        assert sort_out(ws.db, rule, ids, datetime.now(UTC)) == ({}, {})
    finally:
        ws.db.conn.set_trace_callback(None)
    assert len(statements) == 3


def test_a_refunded_order_ends_the_quiet_period_a_partial_refund_does_not(ws, world):
    at = datetime(2026, 12, 1, tzinfo=UTC)
    world.list("blog", "full@example.com", "part@example.com")
    with ws.db.conn:
        for order, email, status in (
            ("1", "full", "refunded"),
            ("2", "part", "partially_refunded"),
        ):
            ws.db.execute(
                """INSERT INTO sales (source, order_id, status, amount, currency, at, email,
                   email_key, imported) VALUES ('t', ?, ?, 100, 'USD', ?, ?, ?, ?)""",
                [order, status, (at - timedelta(days=1)).isoformat(), f"{email}@example.com",
                 f"{email}@example.com", at.isoformat()],
            )  # fmt: skip
    ids = dict(ws.db.execute("SELECT email, id FROM subscribers").fetchall())
    wait, skip = sort_out(ws.db, Respect(timedelta(days=7), None), ids.values(), at)
    assert set(wait) == {ids["part@example.com"]}
    assert wait[ids["part@example.com"]].until == at + timedelta(days=6)
    assert skip == {}


def test_a_purchase_attributed_to_a_message_counts_whatever_address_paid(ws, world):
    at = datetime(2026, 12, 1, tzinfo=UTC)
    c = world.campaign("old")
    delivery = world.deliver(c, "reader@example.com", "blog")
    with ws.db.conn:
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
               delivery_id, imported) VALUES ('t', '1', 100, 'USD', ?, 'work@example.org',
               'work@example.org', ?, ?)""",
            [(at - timedelta(days=2)).isoformat(), delivery["id"], at.isoformat()],
        )
    sid = ws.db.execute("SELECT id FROM subscribers WHERE email = 'reader@example.com'")
    sid = sid.fetchone()[0]
    wait, _skip = sort_out(ws.db, Respect(timedelta(days=7), None), [sid], at)
    assert wait[sid].until == at + timedelta(days=5)
    assert wait[sid].reason == QUIET_AFTER_PURCHASE


def test_the_cap_counts_only_messages_sent_within_its_window(ws, world):
    at = datetime(2026, 12, 10, tzinfo=UTC)
    old = world.campaign("old")
    recent = world.campaign("recent")
    with ws.db.conn:
        ws.db.execute("UPDATE campaigns SET finished = '2026-11-01T10:00:00+00:00'")
        ws.db.execute(
            "UPDATE campaigns SET finished = ? WHERE id = ?",
            [(at - timedelta(hours=5)).isoformat(), recent],
        )
    world.deliver(old, "a@example.com", "blog", sent_at="2026-11-01T09:00:00+00:00")
    world.deliver(recent, "b@example.com", "blog", sent_at=(at - timedelta(hours=6)).isoformat())
    ids = dict(ws.db.execute("SELECT email, id FROM subscribers").fetchall())
    rule = Respect(None, Frequency(1, timedelta(days=1)), (old, recent))
    assert sort_out(ws.db, rule, ids.values(), at) == (
        {ids["b@example.com"]: Hold(at + timedelta(hours=18), FREQUENCY_CAP)},
        {},
    )
    # A deadline before that skips instead.
    rule = Respect(None, Frequency(1, timedelta(days=1)), (old, recent), at + timedelta(hours=2))
    assert sort_out(ws.db, rule, ids.values(), at) == ({}, {ids["b@example.com"]: FREQUENCY_CAP})


def test_the_deadline_is_the_earlier_of_max_late_and_the_offer_expiry(ws, workspace):
    (workspace / "campaigns" / "t.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nsend_at = "2026-12-01T09:00:00+00:00"\n'
        'max_late = "2d"\n'
    )
    c = load_campaign(workspace / "campaigns", "t")
    assert deadline(ws.db, c, None) == datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert deadline(ws.db, c, "2026-12-01") == datetime(2026, 12, 2, tzinfo=UTC)
    manual = load_campaign(workspace / "campaigns", "launch")
    assert deadline(ws.db, manual, None) is None


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "LISTKIT_QUIET_AFTER_PURCHASE",
            "a week",
            "LISTKIT_QUIET_AFTER_PURCHASE must be a duration such as 7d, 36h or 1d12h, at most "
            "366d, not 'a week'",
        ),
        (
            "LISTKIT_QUIET_AFTER_PURCHASE",
            "0d",
            "LISTKIT_QUIET_AFTER_PURCHASE must be a duration such as 7d, 36h or 1d12h, at most "
            "366d, not '0d'",
        ),
        (
            "LISTKIT_FREQUENCY",
            "24h",
            "LISTKIT_FREQUENCY must be a number of messages per duration, such as 1/24h or 3/7d, "
            "not '24h'",
        ),
        (
            "LISTKIT_FREQUENCY",
            "0/1d",
            "LISTKIT_FREQUENCY must be a number of messages per duration, such as 1/24h or 3/7d, "
            "not '0/1d'",
        ),
    ],
)
def test_a_malformed_setting_is_named_with_the_form_it_needs(workspace, name, value, message):
    settings = Settings(workspace, {name: value}, {})
    attr = Settings.declared[name].attr
    with pytest.raises(ConfigError) as e:
        getattr(settings, attr)
    assert str(e.value) == message


def test_a_malformed_setting_stops_the_send_before_anything_is_written(run, workspace, server):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="daily")
    (workspace / "campaigns" / "t.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: LISTKIT_FREQUENCY must be a number of messages per duration, such as 1/24h "
        "or 3/7d, not 'daily'\n"
    )
    assert handler.messages == []
    assert "Campaign t: manual, not sent yet" in run("status", "t").output


def test_the_settings_read_as_a_duration_and_a_frequency(workspace):
    s = Settings(workspace, {"LISTKIT_QUIET_AFTER_PURCHASE": "7d", "LISTKIT_FREQUENCY": "3/7d"}, {})
    assert s.quiet_after_purchase == timedelta(days=7)
    assert s.frequency == Frequency(3, timedelta(days=7))
    assert str(s.frequency) == "3/7d"


def test_a_campaign_sells_unless_its_file_says_sells_false(workspace, run):
    path = workspace / "campaigns" / "n.toml"
    path.write_text('offer = "launch"\nlists = ["blog"]\nsells = false\n')
    assert load_campaign(workspace / "campaigns", "n").sells is False
    assert load_campaign(workspace / "campaigns", "launch").sells is True
    path.write_text('offer = "launch"\nlists = ["blog"]\nsells = "no"\n')
    result = run("campaigns", "check", "n", ok=False)
    assert result.output == (
        f"Error: {path}: field sells must be true or false (false: a newsletter that sells "
        "nothing)\n"
    )


def test_a_killed_send_with_held_back_rows_resumes_and_mails_nobody_twice(
    run, workspace, server, clock
):
    controller, handler = server
    readers = [f"k{i}@example.com" for i in range(60)]
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d")
    for address in readers:
        run("subscribers", "add", address, "--list", "blog")
    buyers = readers[::3]
    for n, address in enumerate(buyers):
        sale(run, address, clock() - timedelta(days=1), order=f"k{n}")
    # 40 messages a second: the run takes about a second, so the kill lands mid-run.
    (workspace / "campaigns" / "t.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nrate = 40\n'
    )
    proc = listkit(workspace, "send", "t", "--yes")
    handler.wait_for(lambda: len(handler.messages) >= 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sent = [a for a, row in states(workspace, "t").items() if row[0] == "sent"]
    assert len(sent) < len(readers) - len(buyers)  # killed mid-run
    final = listkit(workspace, "send", "t", "--yes")
    output, _ = final.communicate(timeout=60)
    rows = states(workspace, "t")
    assert {rows[a][:2] for a in buyers} == {("held_back", QUIET_AFTER_PURCHASE)}, output
    assert not set(buyers) & set(handler.recipients())
    # A week later, cron sends the held-back rows: each reader has one message at most.
    clock.move(days=6, hours=1)
    run("send", "--due", ok=False)
    rows = states(workspace, "t")
    assert {rows[a][0] for a in buyers} == {"sent"}
    at_sink = handler.recipients()
    assert max(at_sink.values()) == 1
    for address, (state, *_rest) in rows.items():
        assert state in ("sent", "unknown"), (address, state)
        if state == "sent":
            assert at_sink[address] == 1
