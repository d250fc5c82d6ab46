"""Signups and their confirmations: what a signup records, and who is mailed when.

The clock is passed in (``at=``): a day or an hour goes by without a sleep.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listkit.audience.signups import claim_confirmations, mark_mailed, record_signup
from listkit.audience.suppressions import suppress
from listkit.config import load_settings
from listkit.db import immediate
from listkit.errors import ConfigError
from tests.world import World

T = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
STRANGER = "stranger@example.net"


@pytest.fixture
def world(ws):
    w = World(ws.db)
    w.list("blog")
    w.list("shop")
    return w


def sign_up(ws, email, at, *, ip="192.0.2.1", list_slug="blog"):
    with immediate(ws.db):
        return record_signup(ws.db, list_slug, email, ip=ip, at=at.isoformat())


def mail_due(ws, at, *, per_hour=100, reply=(True, "250 2.0.0 queued")):
    """Claim what is due at ``at`` and record the server's answer; the addresses mailed."""
    with immediate(ws.db):
        claimed, more = claim_confirmations(ws.db, at=at, per_hour=per_hour)
    assert not more
    with immediate(ws.db):
        for signup in claimed:
            mark_mailed(ws.db, signup["id"], *reply)
    return [(s["email"], s["list"]) for s in claimed]


def states(ws):
    return ws.db.execute("SELECT state, mail_reply FROM signups ORDER BY id").fetchall()


def test_twelve_signups_of_one_address_from_four_clients_mail_it_one_confirmation(ws, world):
    mailed = []
    for i in range(12):  # in two seconds, from four client addresses
        at = T + timedelta(seconds=i / 6)
        sign_up(ws, STRANGER, at, ip=f"198.51.100.{i % 4}")
        mailed += mail_due(ws, at)
    assert mailed == [(STRANGER, "blog")]
    rows = states(ws)
    assert [s for s, _ in rows] == ["mailed"] + ["not_mailed"] * 11
    assert {r for _, r in rows[1:]} == {
        "a confirmation was mailed to this address for this list less than a day ago: "
        "not mailed again"
    }
    ips = {r[0] for r in ws.db.execute("SELECT ip FROM signups")}
    assert ips == {f"198.51.100.{i}" for i in range(4)}  # the evidence of every attempt


def test_signups_that_wait_together_mail_one_confirmation_per_address(ws, world):
    for i in range(5):
        sign_up(ws, STRANGER, T + timedelta(seconds=i))
    sign_up(ws, "other@example.net", T)
    assert sorted(mail_due(ws, T + timedelta(seconds=5))) == [
        ("other@example.net", "blog"),
        (STRANGER, "blog"),
    ]


def test_an_address_is_mailed_again_only_a_day_after_its_last_confirmation(ws, world):
    sign_up(ws, STRANGER, T)
    assert mail_due(ws, T) == [(STRANGER, "blog")]
    almost = T + timedelta(days=1) - timedelta(seconds=1)
    sign_up(ws, STRANGER, almost)
    assert mail_due(ws, almost) == []
    later = T + timedelta(days=1, seconds=1)
    sign_up(ws, STRANGER, later)
    assert mail_due(ws, later) == [(STRANGER, "blog")]


def test_the_daily_limit_is_per_list_and_a_refused_confirmation_does_not_count(ws, world):
    sign_up(ws, STRANGER, T)
    assert mail_due(ws, T, reply=(False, "550 5.1.1 no such user")) == [(STRANGER, "blog")]
    sign_up(ws, STRANGER, T + timedelta(minutes=1))  # nobody got the first: try again
    sign_up(ws, STRANGER, T + timedelta(minutes=1), list_slug="shop")
    assert sorted(mail_due(ws, T + timedelta(minutes=1))) == [
        (STRANGER, "blog"),
        (STRANGER, "shop"),
    ]


def test_a_list_mails_no_more_than_its_hourly_budget_of_confirmations(ws, world):
    for i in range(5):
        sign_up(ws, f"p{i}@example.net", T + timedelta(minutes=i))
    sign_up(ws, "q@example.net", T, list_slug="shop")  # another list has its own budget
    mailed = mail_due(ws, T + timedelta(minutes=5), per_hour=3)
    assert sorted(mailed) == [
        ("p0@example.net", "blog"),
        ("p1@example.net", "blog"),
        ("p2@example.net", "blog"),
        ("q@example.net", "shop"),
    ]
    over = [r for s, r in states(ws) if s == "not_mailed"]
    assert (
        over
        == [
            "over the list's budget of 3 confirmations an hour (LISTKIT_CONFIRM_PER_HOUR): "
            "not mailed; the person can sign up again later"
        ]
        * 2
    )
    # An hour after the first three, the budget is there again.
    later = T + timedelta(hours=1, minutes=6)
    sign_up(ws, "p3@example.net", later)
    assert mail_due(ws, later, per_hour=3) == [("p3@example.net", "blog")]


def snapshot(ws):
    return [
        ws.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("subscribers", "memberships", "suppressions")
    ]


def test_recording_a_signup_does_the_same_work_whoever_the_address_is(ws, world):
    # The answer must not tell who is on the list, by its time either: the
    # request records the signup as it came, and the mailer decides later.
    world.list("blog", "member@example.net")
    world.list("blog", "waiting@example.net", status="pending")
    world.list("blog", "gone@example.net", status="unsubscribed")
    suppress(ws.db, "blocked@example.net", "hard_bounce")
    ws.db.conn.commit()
    before = snapshot(ws)
    for who in ("stranger", "member", "waiting", "gone", "blocked"):
        sign_up(ws, f"{who}@example.net", T)
        assert snapshot(ws) == before, who
    assert [s for s, _ in states(ws)] == ["new"] * 5


def test_the_mailer_decides_who_is_mailed_and_a_stranger_joins_as_pending(ws, world):
    world.list("blog", "member@example.net")
    suppress(ws.db, "blocked@example.net", "hard_bounce")
    ws.db.conn.commit()
    for who in ("stranger", "member", "blocked"):
        sign_up(ws, f"{who}@example.net", T)
    assert mail_due(ws, T) == [("stranger@example.net", "blog")]
    assert [s for s, _ in states(ws)] == ["mailed", "not_mailed", "not_mailed"]
    row = ws.db.execute(
        """SELECT m.status, m.consent_ip, s.source FROM memberships m
           JOIN subscribers s ON s.id = m.subscriber_id WHERE s.key = ?""",
        ["stranger@example.net"],
    ).fetchone()
    assert row == ("pending", "192.0.2.1", "form:blog")


def test_a_pending_member_s_consent_time_is_when_it_signed_up_as_after_it_confirms(ws, world):
    sign_up(ws, STRANGER, T)
    later = T + timedelta(seconds=2)  # the mailer takes the signup a moment after it came
    assert mail_due(ws, later) == [(STRANGER, "blog")]
    row = ws.db.execute(
        """SELECT m.consent_at, m.created, g.created FROM memberships m
           JOIN subscribers s ON s.id = m.subscriber_id
           JOIN signups g ON g.key = s.key WHERE s.key = ?""",
        [STRANGER],
    ).fetchone()
    assert row == (T.isoformat(), later.isoformat(), T.isoformat())


def test_the_hourly_budget_is_a_setting_with_a_default(workspace):
    assert load_settings(workspace, {}).confirm_per_hour == 100
    assert load_settings(workspace, {"LISTKIT_CONFIRM_PER_HOUR": "20"}).confirm_per_hour == 20
    for bad in ("0", "-3", "many", "2.5"):
        settings = load_settings(workspace, {"LISTKIT_CONFIRM_PER_HOUR": bad})
        with pytest.raises(ConfigError) as e:
            settings.confirm_per_hour  # noqa: B018
        assert str(e.value) == (
            "LISTKIT_CONFIRM_PER_HOUR must be a whole number of confirmations an hour "
            f"per list (1 or more), not {bad!r}"
        )
