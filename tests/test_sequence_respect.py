"""Respect for the reader across campaigns and sequence steps: one rule of what sells,
and one check (the quiet period after a purchase, the frequency cap) for both.

listkit's clock is moved through days (the `clock` fixture) between cron-like
`listkit send --due` calls, against a real SMTP server (aiosmtpd, in-process).
"""

import json
from datetime import timedelta

from listkit.send.campaigns import selling_campaigns
from listkit.send.sequence_files import load_sequence
from listkit.vocab import FREQUENCY_CAP, QUIET_AFTER_PURCHASE
from listkit.workspace import Workspace
from tests.test_respect import READERS, campaign, sale, setup_workspace, states

BUYER = "r1@example.com"


def sequence(workspace, *steps: str) -> None:
    """sequences/promo.toml on the list blog, with the given [[steps]] bodies."""
    (workspace / "sequences").mkdir(exist_ok=True)
    body = "".join(f"\n[[steps]]\n{s}\n" for s in steps)
    (workspace / "sequences" / "promo.toml").write_text(f'trigger = "joined:blog"\n{body}')


HELLO = 'name = "hello"\noffer = "welcome-download"\nafter = "0m"\nsells = false'
PITCH = 'name = "pitch"\noffer = "launch"\nafter = "1d"'  # sells, by default
BYE = 'name = "bye"\noffer = "welcome-story"\nafter = "1d"\nsells = false'


def got(handler) -> dict[str, list[str]]:
    """address -> the subjects' first words they received, in order."""
    out: dict[str, list[str]] = {}
    for _mid, rcpt, data in handler.messages:
        subject = next(x for x in data.split(b"\n") if x.startswith(b"Subject:"))
        kind = "pitch" if b"Field Guide is out" in subject else subject.decode()[9:20]
        out.setdefault(rcpt, []).append(kind)
    return out


def enrol(run) -> None:
    assert "Enrolled 4 readers in promo." in run("sequences", "enroll", "promo", "--yes").output


def show(run) -> str:
    return run("sequences", "show", "promo").output


def test_a_step_sells_unless_its_file_says_sells_false_as_a_campaign_does(workspace, run):
    setup_workspace(run, workspace, 1025)
    sequence(workspace, HELLO, PITCH)
    seq = load_sequence(workspace / "sequences", workspace / "offers", "promo")
    assert [(s.name, s.sells) for s in seq.steps] == [("hello", False), ("pitch", True)]
    run("sequences", "check", "promo")
    ws = Workspace(workspace)
    try:
        steps = dict(ws.db.execute("SELECT id, slug FROM campaigns WHERE sequence_id IS NOT NULL"))
        selling = selling_campaigns(ws.db, ws.campaigns_dir)
    finally:
        ws.close()
    assert [steps[c] for c in selling if c in steps] == ["promo/pitch"]


def test_a_reader_who_just_bought_gets_a_selling_step_only_after_the_quiet_period(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d")
    start = clock()
    sale(run, BUYER, start - timedelta(days=1))
    sequence(workspace, HELLO, PITCH, BYE)
    enrol(run)
    run("send", "--due")
    # A step that sells nothing is never held back, for the buyer neither.
    assert got(handler) == {a: ["Your Sellin"] for a in READERS}
    clock.move(days=1, minutes=1)
    run("send", "--due")
    assert got(handler)[BUYER] == ["Your Sellin"]
    assert all(got(handler)[a] == ["Your Sellin", "pitch"] for a in READERS if a != BUYER)
    state, reason, until = states(workspace, "promo/pitch")[BUYER]
    assert (state, reason) == ("held_back", QUIET_AFTER_PURCHASE)
    assert until[:16] == (start + timedelta(days=6)).isoformat()[:16]
    assert "1 held back (quiet after purchase)" in show(run)
    for _ in range(9):  # cron every 12 hours: the pitch waits for the quiet period's end
        clock.move(hours=12)
        run("send", "--due")
        assert "pitch" not in got(handler)[BUYER]
    clock.move(hours=12)  # day 6 and a minute: the quiet period is over
    run("send", "--due")
    assert got(handler)[BUYER] == ["Your Sellin", "pitch"]
    assert states(workspace, "promo/pitch")[BUYER][0] == "sent"
    # Meanwhile the buyer passed no further step: the next is due a day after the
    # pitch could go, so the steps arrive in their order.
    clock.move(hours=23)
    run("send", "--due")
    assert got(handler)[BUYER] == ["Your Sellin", "pitch"]
    clock.move(hours=1, minutes=1)
    run("send", "--due")
    assert got(handler)[BUYER] == ["Your Sellin", "pitch", "The launch "]
    assert all(got(handler)[a] == got(handler)[BUYER] for a in READERS)


def test_the_cap_holds_a_selling_step_sent_the_day_of_a_campaign_back_to_the_next_day(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="1/24h")
    start = clock()
    campaign(workspace, "t", start)
    sequence(workspace, HELLO, PITCH.replace('"1d"', '"2h"'))
    enrol(run)
    out = run("send", "--due").output
    assert out.startswith("t: this run 4 sent")
    # The campaign's messages count; the useful first step is not held.
    assert got(handler) == {a: ["pitch", "Your Sellin"] for a in READERS}
    clock.move(hours=3)
    run("send", "--due")
    assert {state for state, *_ in states(workspace, "promo/pitch").values()} == {"held_back"}
    assert {reason for _s, reason, _u in states(workspace, "promo/pitch").values()} == {
        FREQUENCY_CAP
    }
    assert "4 held back (frequency cap)" in show(run)
    clock.move(hours=12)
    assert run("send", "--due").output == ""
    assert len(handler.messages) == 8
    clock.move(hours=10)  # a day after the campaign's messages went
    run("send", "--due")
    assert got(handler) == {a: ["pitch", "Your Sellin", "pitch"] for a in READERS}
    # The step's messages count against the cap for a campaign in turn.
    campaign(workspace, "u", clock())
    out = run("send", "--due").output
    assert "4 held back" in out
    assert {s for s, *_ in states(workspace, "u").values()} == {"held_back"}
    assert len(handler.messages) == 12


def test_a_step_that_cannot_fit_before_its_offer_expires_is_skipped_with_the_reason(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, quiet_after_purchase="7d")
    start = clock()
    offer = workspace / "offers" / "launch" / "offer.toml"
    offer.write_text(offer.read_text() + f'\nexpires = "{(start + timedelta(days=3)).date()}"\n')
    sale(run, BUYER, start - timedelta(days=1))
    sequence(workspace, HELLO, PITCH, BYE)
    enrol(run)
    run("send", "--due")
    clock.move(days=1, minutes=1)
    run("send", "--due")
    state, reason, _until = states(workspace, "promo/pitch")[BUYER]
    assert (state, reason) == ("skipped", QUIET_AFTER_PURCHASE)
    assert "1 skipped (quiet after purchase)" in show(run)
    shown = json.loads(run("sequences", "show", "promo", "--json").output)
    pitch = next(s for s in shown if s["step"] == "pitch")
    assert pitch["skipped"] == {QUIET_AFTER_PURCHASE: 1}
    report = json.loads(run("report", "--by", "campaign", "--json").output)
    assert report["skipped_for_reader"] == [
        {"campaign": "promo/pitch", "list": "blog", "reason": QUIET_AFTER_PURCHASE, "messages": 1}
    ]
    # The reader goes on to the next step, as after an expired step.
    clock.move(days=1)
    run("send", "--due")
    assert got(handler)[BUYER] == ["Your Sellin", "The launch "]
    assert "pitch" not in got(handler)[BUYER]


def test_a_held_step_whose_offer_expires_before_the_next_tick_is_skipped_not_sent(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="1/24h")
    start = clock()
    offer = workspace / "offers" / "launch" / "offer.toml"
    offer.write_text(offer.read_text() + f'\nexpires = "{(start + timedelta(days=1)).date()}"\n')
    campaign(workspace, "t", start)
    sequence(workspace, PITCH.replace('"1d"', '"2h"'))
    enrol(run)
    run("send", "--due")
    clock.move(hours=3)
    run("send", "--due")
    assert {s for s, *_ in states(workspace, "promo/pitch").values()} == {"held_back"}
    clock.move(days=3)  # cron stopped until after the offer's expiry
    run("send", "--due")
    assert len(handler.messages) == 4  # the campaign's alone
    assert {(s, r) for s, r, _u in states(workspace, "promo/pitch").values()} == {
        ("skipped", FREQUENCY_CAP)
    }


def test_a_held_campaign_message_not_sent_by_its_deadline_is_skipped_with_the_reason(
    run, workspace, server, clock
):
    controller, handler = server
    setup_workspace(run, workspace, controller.port, frequency="1/24h")
    start = clock()
    campaign(workspace, "a", start)
    campaign(workspace, "b", start + timedelta(hours=1), max_late="30h")
    run("send", "--due")
    clock.move(hours=2)
    assert "4 held back" in run("send", "--due").output
    clock.move(hours=40)  # no cron between the cap's end and b's max_late
    run("send", "--due")
    assert len(handler.messages) == 4
    assert {(s, r) for s, r, _u in states(workspace, "b").values()} == {("skipped", FREQUENCY_CAP)}
    assert json.loads(run("status", "b", "--json").output)["state"] == "done"
