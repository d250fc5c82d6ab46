"""Sequences sent by `send --due`: a clock moved through weeks, each step once per
reader at its time, no selling step after a purchase, nothing after an exit."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listkit.sales.sales import Sale, add_sale
from listkit.send.sequence_due import send_sequences
from listkit.send.sequence_files import sync_all
from listkit.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parent.parent / "sequences"
SUBJECTS = {
    b"Subject: Your Selling Checklist": "download",
    b"Subject: The launch that sold nothing": "story",
    b"the Field Guide is out": "offer",
    b"Subject: Getting the most out of the Field Guide": "help",
    b"the Field Guide workbook": "workbook",
}
READERS = ["ann@example.com", "bob@example.com", "cy@example.com"]


def step_of(data: bytes) -> str:
    return next(step for marker, step in SUBJECTS.items() if marker in data)


def received(handler) -> Counter:
    return Counter((rcpt, step_of(data)) for _mid, rcpt, data in handler.messages)


def point_at(workspace: Path, port: int) -> None:
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    )


def install(workspace: Path, name: str, holdout: str = "0") -> None:
    (workspace / "sequences").mkdir(exist_ok=True)
    text = (EXAMPLES / f"{name}.toml").read_text()
    text = text.replace("holdout = 0.1", f"holdout = {holdout}")
    (workspace / "sequences" / f"{name}.toml").write_text(text)


def tick(workspace: Path, at: datetime):
    ws = Workspace(workspace)
    try:
        return send_sequences(ws, at=at)
    finally:
        ws.close()


def load(workspace: Path) -> None:
    ws = Workspace(workspace)
    try:
        sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    finally:
        ws.close()


def join_welcome(run, workspace: Path, port: int, addresses, holdout: str = "0") -> datetime:
    """The welcome sequence (with ``holdout``) installed on a new list blog, sending to
    the server at ``port``, and ``addresses`` joining blog; the time just before they
    joined."""
    point_at(workspace, port)
    run("lists", "create", "blog")
    install(workspace, "welcome", holdout)
    load(workspace)
    t0 = datetime.now(UTC)
    for address in addresses:
        run("subscribers", "add", address, "--list", "blog")
    return t0


@pytest.fixture
def welcome(run, workspace, server):
    controller, handler = server
    return join_welcome(run, workspace, controller.port, READERS), handler


def test_a_clock_moved_through_weeks_mails_each_step_once_at_its_time(run, workspace, welcome):
    t0, handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    assert received(handler) == Counter({(r, "download"): 1 for r in READERS})
    for hours in (1, 24, 47):  # story is due 2 days after the download went
        tick(workspace, t0 + timedelta(hours=hours))
    assert len(handler.messages) == 3
    tick(workspace, t0 + timedelta(days=2, minutes=2))
    tick(workspace, t0 + timedelta(days=2, minutes=3))
    assert received(handler) == Counter({(r, s): 1 for r in READERS for s in ("download", "story")})
    tick(workspace, t0 + timedelta(days=5))  # offer: 3 days after the story went
    assert len(handler.messages) == 6
    for days in (5.1, 6, 14, 30):
        tick(workspace, t0 + timedelta(days=days))
    assert received(handler) == Counter({(r, s): 1 for r in READERS for s in SUBJECTS_OF_WELCOME})
    states = run("sequences", "ls", "--json").output
    assert '"finished": 3' in states


SUBJECTS_OF_WELCOME = ("download", "story", "offer")


def test_a_reader_who_buys_between_steps_gets_no_further_selling_step(run, workspace, welcome):
    t0, handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    tick(workspace, t0 + timedelta(days=2, minutes=2))
    run(
        "sales",
        "add",
        "--order",
        "1",
        "--email",
        "bob@example.com",
        "--amount",
        "29.00",
        "--currency",
        "USD",
        "--product",
        "The Field Guide to Selling (ebook)",
        "--at",
        (t0 + timedelta(days=3)).isoformat(),
    )
    tick(workspace, t0 + timedelta(days=5, minutes=3))
    got = received(handler)
    assert got[("ann@example.com", "offer")] == got[("cy@example.com", "offer")] == 1
    assert got[("bob@example.com", "offer")] == 0
    assert got[("bob@example.com", "story")] == 1


def test_an_unsubscribe_ends_the_sequence_and_nothing_more_is_mailed(run, workspace, welcome):
    t0, handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    run("unsubscribe", "cy@example.com")
    for days in (2.1, 5.2, 9):
        tick(workspace, t0 + timedelta(days=days))
    got = received(handler)
    assert sum(n for (r, _s), n in got.items() if r == "cy@example.com") == 1
    ws = Workspace(workspace)
    try:
        row = ws.db.execute(
            """SELECT e.state, e.exit_reason FROM enrollments e JOIN subscribers s
               ON s.id = e.subscriber_id WHERE s.email = 'cy@example.com'"""
        ).fetchone()
    finally:
        ws.close()
    assert row[0] == "exited" and row[1].startswith(("suppressed", "left the list"))


def test_a_paused_sequence_sends_nothing_until_it_is_resumed(run, workspace, welcome):
    t0, handler = welcome
    run("sequences", "pause", "welcome")
    tick(workspace, t0 + timedelta(minutes=1))
    assert handler.messages == []
    run("sequences", "resume", "welcome")
    tick(workspace, t0 + timedelta(minutes=2))
    assert len(handler.messages) == 3


def test_a_purchase_sequence_sends_help_then_the_related_offer_and_a_refund_ends_it(
    run, workspace, server
):
    controller, handler = server
    point_at(workspace, controller.port)
    run("lists", "create", "customers")
    for address in READERS:
        run("subscribers", "add", address, "--list", "customers")
    install(workspace, "after-purchase")
    load(workspace)
    t0 = datetime.now(UTC)
    for n, address in enumerate(READERS[:2]):
        run(
            "sales",
            "add",
            "--order",
            f"P-{n}",
            "--email",
            address,
            "--amount",
            "29.00",
            "--currency",
            "USD",
            "--product",
            "The Field Guide to Selling (ebook)",
            "--at",
            t0.isoformat(),
        )
    tick(workspace, t0 + timedelta(hours=23))
    assert handler.messages == []
    tick(workspace, t0 + timedelta(days=1, minutes=1))
    assert received(handler) == Counter({(r, "help"): 1 for r in READERS[:2]})
    ws = Workspace(workspace)
    try:
        add_sale(
            ws.db,
            Sale(
                "manual",
                "P-1",
                2900,
                "USD",
                t0.isoformat(),
                status="refunded",
                refunded=2900,
                email=READERS[1],
            ),
        )
    finally:
        ws.close()
    tick(workspace, t0 + timedelta(days=15, minutes=2))
    tick(workspace, t0 + timedelta(days=16))
    got = received(handler)
    assert got[(READERS[0], "workbook")] == 1
    assert got[(READERS[1], "workbook")] == 0
    assert (READERS[2], "help") not in got


def test_an_edited_live_sequence_skips_a_removed_step_and_sends_an_added_one(
    run, workspace, welcome
):
    t0, handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    path = workspace / "sequences" / "welcome.toml"
    text = path.read_text()
    story = text[text.index('[[steps]]\nname = "story"') : text.index('[[steps]]\nname = "offer"')]
    text = text.replace(story, "")
    text += '\n[[steps]]\nname = "help"\noffer = "purchase-help"\nafter = "1d"\n'
    path.write_text(text)
    for days in (1, 2.1, 3.1, 4.2, 5, 9, 20):
        tick(workspace, t0 + timedelta(days=days))
    got = received(handler)
    for reader in READERS:
        assert [got[(reader, s)] for s in ("download", "story", "offer", "help")] == [1, 0, 1, 1]
    out = json.loads(run("sequences", "show", "welcome", "--json").output)
    assert [(s["step"], s["removed"]) for s in out] == [
        ("download", False),
        ("story", True),
        ("offer", False),
        ("help", False),
    ]


def test_subscribers_show_tells_where_a_reader_is_in_each_sequence(run, workspace, welcome):
    t0, _handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    out = run("subscribers", "show", "ann@example.com").output
    assert "  sequence welcome: passed download, next story due 20" in out
    data = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    [where] = data["sequences"]
    assert (where["sequence"], where["state"], where["step"], where["next_step"]) == (
        "welcome",
        "active",
        "download",
        "story",
    )


def test_an_unknown_step_message_is_reported_and_retried_only_when_asked(run, workspace, welcome):
    t0, handler = welcome
    handler.fault("bob@example.com", "disconnect_after_data")
    tick(workspace, t0 + timedelta(minutes=1))
    tick(workspace, t0 + timedelta(minutes=2))  # never retried by itself
    assert received(handler)[("bob@example.com", "download")] == 1
    out = json.loads(run("sequences", "show", "welcome", "--json").output)
    assert out[0]["messages"] == {"sent": 2, "unknown": 1}
    result = run("sequences", "retry", "welcome", "--unknown")
    assert result.output == (
        "1 unknown messages of welcome will be sent by the next `listkit send --due`.\n"
    )
    tick(workspace, t0 + timedelta(minutes=3))
    assert received(handler)[("bob@example.com", "download")] == 2
    out = json.loads(run("sequences", "show", "welcome", "--json").output)
    assert out[0]["messages"] == {"sent": 3}


def test_steps_show_in_report_by_campaign_under_their_names_and_not_in_campaign_listings(
    run, workspace, welcome
):
    t0, _handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    report = json.loads(run("report", "--by", "campaign", "--json").output)
    text = json.dumps(report)
    assert '"welcome/download"' in text
    statuses = json.loads(run("status", "--json").output)
    assert all("/" not in row["campaign"] for row in statuses)
    assert "welcome" not in run("campaigns", "ls").output


def test_enroll_shows_the_count_first_and_enrols_existing_members_only_when_told(
    run, workspace, server
):
    controller, handler = server
    point_at(workspace, controller.port)
    run("lists", "create", "blog")
    for address in READERS:
        run("subscribers", "add", address, "--list", "blog")
    install(workspace, "welcome")
    load(workspace)
    run(
        "sales",
        "add",
        "--order",
        "9",
        "--email",
        "ann@example.com",
        "--amount",
        "5.00",
        "--currency",
        "USD",
    )
    asked = run("sequences", "enroll", "welcome", "--where", "not_bought=anything", ok=False)
    assert asked.exit_code == 1
    assert asked.output.startswith("2 readers would enter welcome now")
    assert "run `listkit sequences enroll welcome --yes`" in asked.output
    tick(workspace, datetime.now(UTC) + timedelta(minutes=1))
    assert handler.messages == []  # nobody was enrolled by asking
    done = run("sequences", "enroll", "welcome", "--where", "not_bought=anything", "--yes")
    assert done.output.endswith("Enrolled 2 readers in welcome.\n")
    tick(workspace, datetime.now(UTC) + timedelta(minutes=1))
    assert set(received(handler)) == {
        ("bob@example.com", "download"),
        ("cy@example.com", "download"),
    }
    again = run("sequences", "enroll", "welcome", "--yes")
    assert again.output.startswith("1 readers would enter")  # ann: not in it yet


def test_the_held_out_share_is_drawn_at_the_first_step_and_never_mailed(run, workspace, server):
    controller, handler = server
    point_at(workspace, controller.port)
    run("lists", "create", "blog")
    install(workspace, "welcome", holdout="0.5")
    load(workspace)
    readers = [f"h{i}@example.com" for i in range(16)]
    for address in readers:
        run("subscribers", "add", address, "--list", "blog")
    t0 = datetime.now(UTC)
    for days in (0.01, 2.1, 5.2, 9):
        tick(workspace, t0 + timedelta(days=days))
    rows = json.loads(run("sequences", "ls", "--json").output)
    [welcome] = rows
    assert 0 < welcome["held_out"] < 16
    assert welcome["finished"] + welcome["held_out"] == 16
    mailed = {r for r, _s in received(handler)}
    assert len(mailed) == welcome["finished"]
    assert len(handler.messages) == 3 * welcome["finished"]


def test_a_step_whose_offer_has_expired_is_skipped_and_the_reader_goes_on(run, workspace, welcome):
    t0, handler = welcome
    tick(workspace, t0 + timedelta(minutes=1))
    tick(workspace, t0 + timedelta(days=2, minutes=2))
    offer = workspace / "offers" / "launch" / "offer.toml"
    ends = (t0 + timedelta(days=3)).date().isoformat()
    offer.write_text(offer.read_text().replace('expires = "2026-12-31"', f'expires = "{ends}"'))
    tick(workspace, t0 + timedelta(days=6))
    assert [s for _r, s in received(handler)] == ["download"] * 3 + ["story"] * 3
    out = json.loads(run("sequences", "show", "welcome", "--json").output)
    assert out[2]["messages"] == {"skipped": 3}
    assert json.loads(run("sequences", "ls", "--json").output)[0]["finished"] == 3
