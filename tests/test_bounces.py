"""Bounce and complaint reports: parsing the corpus, matching, effects once."""

import re
import typing
from pathlib import Path

import pytest

from listkit.config import SoftRule, load_settings
from listkit.errors import ConfigError
from listkit.inbox.bounces import apply, parse
from listkit.mail.tracking import token_bytes
from tests.world import World, tokens

CORPUS = Path(__file__).parent / "fixtures" / "bounces"

# file -> kind, format, [(recipient, outcome, status)], VERP token, token of the returned
# Message-ID
EXPECTED = {
    "postfix_user_unknown.eml": (
        "dsn",
        "postfix",
        [("nobody@example.net", "hard", "5.1.1")],
        "postfixtokenaaaa",
        "postfixtokenaaaa",
    ),
    "postfix_virtual_unknown_user.eml": (
        "dsn",
        "postfix",
        [("ghost4@users.example.com", "hard", "5.1.1")],
        "mhpsbezciuv7tbok",
        "mhpsbezciuv7tbok",
    ),
    "postfix_delayed.eml": (
        "dsn",
        "postfix",
        [("slow@example.org", "ignored", "4.4.1")],
        "postfixdelayedaa",
        "postfixdelayedaa",
    ),
    "exim_user_unknown.eml": (
        "text_bounce",
        "exim",
        [("gone@example.org", "hard", "5.1.1")],
        None,
        "eximtokenaaaaaaa",
    ),
    "qmail_no_mailbox.eml": (
        "text_bounce",
        "qmail",
        [("nosuch@example.net", "hard", "5.1.1")],
        "qmailtokenaaaaaa",
        "qmailtokenaaaaaa",
    ),
    "microsoft_recipient_not_found.eml": (
        "dsn",
        "exchange",
        [("left@contoso.example", "hard", "5.1.10")],
        None,
        "microsofttokenaa",
    ),
    "gmail_user_unknown.eml": (
        "dsn",
        "gmail",
        [("missing.reader@gmail.com", "hard", "5.1.1")],
        "gmailtokenaaaaaa",
        "gmailtokenaaaaaa",
    ),
    "gmail_old_text.eml": (
        "text_bounce",
        "gmail",
        [("old.reader@example.org", "hard", "5.1.1")],
        None,
        "gmailoldtokenaaa",
    ),
    "gmail_mailbox_full.eml": (
        "dsn",
        "gmail",
        [("full.reader@gmail.com", "soft", "4.2.2")],
        "gmailfullaaaaaaa",
        "gmailfullaaaaaaa",
    ),
    "ses_bounce.eml": (
        "dsn",
        "ses",
        [("ses.gone@example.net", "hard", "5.1.1")],
        None,
        None,
    ),
    "arf_complaint.eml": (
        "complaint",
        "arf",
        [("angry.reader@hotmail.example", "complaint", None)],
        "arftokenaaaaaaaa",
        "arftokenaaaaaaaa",
    ),
    "vacation_reply.eml": ("auto_reply", "rfc3834", [], "vacationtokenaaa", None),
    "not_a_bounce.eml": ("unknown", "none", [], None, None),
}


def test_every_file_of_the_corpus_has_an_expected_outcome():
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_corpus_message_parses_to_its_expected_outcome(name):
    kind, fmt, recipients, token, message_token = EXPECTED[name]
    report = parse((CORPUS / name).read_bytes())
    assert (report.kind, report.format) == (kind, fmt)
    assert [(r.email, r.outcome, r.status) for r in report.recipients] == recipients
    assert report.token == token
    assert report.message_token == message_token


# ---------------------------------------------------------------------------
# Real messages: Sisimai's set-of-emails, with Sisimai's own verdicts

SISIMAI_CORPUS = CORPUS / "sisimai"

# Per message, each recipient's (reason, hardbounce) as Sisimai's own test tables give
# them (sisimai/p5-sisimai v5.1.0p3, t/*-lhost-*.t, t/*-rhost-*.t, t/890-rfc3464.t,
# t/891-rfc3834.t, t/899-arf.t: ``$isexpected``).
SISIMAI = {
    "arf-01.eml": [("feedback", 0)],
    "arf-02.eml": [("feedback", 0)],
    "arf-12.eml": [("feedback", 0)],
    "arf-14.eml": [("feedback", 0)],
    "arf-18.eml": [("feedback", 0)],
    "arf-22.eml": [("feedback", 0)],
    "is-not-bounce-01.eml": [],  # maildir/not: not a bounce
    "is-not-bounce-02.eml": [],  # maildir/not: not a bounce
    "lhost-activehunter-01.eml": [("userunknown", 1)],
    "lhost-amavis-01.eml": [("userunknown", 1)],
    "lhost-amavis-03.eml": [("spamdetected", 0)],
    "lhost-amazonses-01.eml": [("securityerror", 0)],
    "lhost-amazonses-05.eml": [("userunknown", 1)],
    "lhost-amazonses-06.eml": [("userunknown", 1)],
    "lhost-amazonworkmail-01.eml": [("userunknown", 1)],
    "lhost-amazonworkmail-03.eml": [("systemerror", 0)],
    "lhost-barracuda-01.eml": [("spamdetected", 0)],
    "lhost-bigfoot-02.eml": [("userunknown", 1)],
    "lhost-courier-01.eml": [("userunknown", 1)],
    "lhost-courier-02.eml": [("filtered", 0)],
    "lhost-domino-03.eml": [("networkerror", 0)],
    "lhost-einsundeins-02.eml": [("mesgtoobig", 0)],
    "lhost-exchange2003-05.eml": [("userunknown", 1)],
    "lhost-exchange2007-01.eml": [("userunknown", 1)],
    "lhost-exchange2007-02.eml": [("mailboxfull", 0)],
    "lhost-exchange2007-06.eml": [("userunknown", 1)],
    "lhost-exim-01.eml": [("blocked", 0)],
    "lhost-exim-02.eml": [("userunknown", 1), ("userunknown", 1)],
    "lhost-exim-05.eml": [("userunknown", 1)],
    "lhost-exim-07.eml": [("mailboxfull", 0)],
    "lhost-exim-31.eml": [("hostunknown", 1)],
    "lhost-ezweb-02.eml": [("suspend", 0)],
    "lhost-ezweb-04.eml": [("userunknown", 1)],
    "lhost-gmail-01.eml": [("userunknown", 1)],
    "lhost-gmail-03.eml": [("filtered", 0)],
    "lhost-gmail-06.eml": [("mailboxfull", 0)],
    "lhost-gmail-08.eml": [("expired", 0)],
    "lhost-gmail-18.eml": [("userunknown", 1)],
    "lhost-gmx-01.eml": [("mailboxfull", 0)],
    "lhost-gmx-02.eml": [("userunknown", 1)],
    "lhost-googlegroups-01.eml": [("rejected", 0)],
    "lhost-imailserver-04.eml": [("expired", 0)],
    "lhost-mailfoundry-02.eml": [("mailboxfull", 0)],
    "lhost-mailru-01.eml": [("userunknown", 1)],
    "lhost-mailru-02.eml": [("mailboxfull", 0)],
    "lhost-mcafee-01.eml": [("userunknown", 1)],
    "lhost-messagingserver-01.eml": [("userunknown", 1)],
    "lhost-messagingserver-04.eml": [("mailboxfull", 0)],
    "lhost-mfilter-02.eml": [("userunknown", 1)],
    "lhost-office365-01.eml": [("userunknown", 1)],
    "lhost-office365-02.eml": [("userunknown", 1)],
    "lhost-office365-03.eml": [("authfailure", 0)],
    "lhost-office365-12.eml": [("mailboxfull", 0)],
    "lhost-opensmtpd-06.eml": [("expired", 0)],
    "lhost-opensmtpd-11.eml": [("authfailure", 0)],
    "lhost-outlook-01.eml": [("mailboxfull", 0)],
    "lhost-outlook-02.eml": [("userunknown", 1)],
    "lhost-postfix-02.eml": [("userunknown", 1), ("userunknown", 1)],
    "lhost-postfix-03.eml": [("filtered", 0)],
    "lhost-postfix-04.eml": [("userunknown", 1)],
    "lhost-postfix-34.eml": [("networkerror", 0)],
    "lhost-powermta-01.eml": [("userunknown", 1)],
    "lhost-qmail-01.eml": [("userunknown", 1)],
    "lhost-qmail-02.eml": [("userunknown", 1), ("userunknown", 1)],
    "lhost-qmail-03.eml": [("rejected", 0)],
    "lhost-qmail-25.eml": [("mailboxfull", 0), ("userunknown", 1)],
    "lhost-receivingses-03.eml": [("onhold", 0)],
    "lhost-sendgrid-01.eml": [("userunknown", 1)],
    "lhost-sendgrid-03.eml": [("expired", 0)],
    "lhost-sendmail-04.eml": [("rejected", 0)],
    "lhost-sendmail-12.eml": [("expired", 0)],
    "lhost-sendmail-15.eml": [("hostunknown", 1)],
    "lhost-sendmail-17.eml": [("hasmoved", 1)],
    "lhost-surfcontrol-02.eml": [("systemerror", 0)],
    "lhost-x2-03.eml": [("expired", 0)],
    "lhost-x3-05.eml": [("undefined", 0)],
    "lhost-x4-01.eml": [("mailboxfull", 0)],
    "lhost-x5-01.eml": [("userunknown", 1)],
    "lhost-x6-01.eml": [("networkerror", 0)],
    "lhost-yahoo-01.eml": [("userunknown", 1)],
    "lhost-yahoo-02.eml": [("mailboxfull", 0)],
    "lhost-yahoo-03.eml": [("userunknown", 1)],
    "lhost-yandex-01.eml": [("userunknown", 1)],
    "lhost-yandex-02.eml": [("userunknown", 1), ("mailboxfull", 0)],
    "rfc3464-03.eml": [("policyviolation", 0)],
    "rfc3464-10.eml": [("hasmoved", 1)],
    "rfc3464-28.eml": [("delivered", 0), ("delivered", 0)],
    "rfc3834-01.eml": [("vacation", 0)],
    "rfc3834-02.eml": [("vacation", 0)],
    "rhost-apple-01.eml": [("hasmoved", 1)],
    "rhost-apple-02.eml": [("authfailure", 0)],
    "rhost-cox-01.eml": [("blocked", 0)],
    "rhost-franceptt-01.eml": [("userunknown", 1)],
    "rhost-franceptt-04.eml": [("spamdetected", 0)],
    "rhost-godaddy-02.eml": [("blocked", 0)],
    "rhost-google-01.eml": [("suspend", 0)],
    "rhost-google-03.eml": [("authfailure", 0)],
    "rhost-iua-01.eml": [("suspend", 0)],
    "rhost-kddi-01.eml": [("filtered", 0)],
    "rhost-microsoft-01.eml": [("blocked", 0)],
    "rhost-microsoft-02.eml": [("userunknown", 1)],
    "rhost-microsoft-04.eml": [("authfailure", 0)],
    "rhost-mimecast-01.eml": [("policyviolation", 0)],
    "rhost-nttdocomo-01.eml": [("filtered", 0)],
    "rhost-spectrum-01.eml": [("toomanyconn", 0)],
    "rhost-tencent-01.eml": [("toomanyconn", 0)],
    "rhost-yahooinc-01.eml": [("policyviolation", 0)],
}


# Sisimai's verdict -> listkit's. Sisimai's own hardbounce flag decides hard (it is 1 for
# userunknown, hostunknown, hasmoved and a permanent notaccept); every other bounce reason
# (mailboxfull, expired, filtered, rejected, blocked, suspend, systemerror, networkerror,
# policyviolation, authfailure, spamdetected, toomanyconn, onhold, undefined...) is soft,
# counted towards LISTKIT_SOFT_BOUNCES. feedback is a complaint, vacation an auto-reply
# (ignored), delivered (and a delay, which Sisimai does not report) has no effect, and a
# message that is no report at all is a person's mail, left alone.
NOT_A_BOUNCE = {"feedback": "complaint", "vacation": "auto-reply", "delivered": "no effect"}


def sisimai_verdicts(name: str) -> list[str]:
    rows = SISIMAI[name]
    if not rows:
        return ["person"]
    return sorted(
        {NOT_A_BOUNCE.get(reason) or ("hard" if hard else "soft") for reason, hard in rows}
    )


# Where listkit decides otherwise, on purpose, and why.
LISTKIT_DIFFERS = {
    "lhost-exim-31.eml": (
        ["soft"],
        "'The account or domain may not exist, they may be blacklisted': in doubt, keep the"
        " reader (Sisimai: hostunknown)",
    ),
    "lhost-gmail-06.eml": (
        ["no effect"],
        "THIS IS A WARNING MESSAGE ONLY: Gmail is still retrying (Sisimai reads the error)",
    ),
    "lhost-gmail-08.eml": (
        ["no effect"],
        "THIS IS A WARNING MESSAGE ONLY: Gmail is still retrying (Sisimai reads the error)",
    ),
    "lhost-opensmtpd-06.eml": (
        ["no effect"],
        "Action: delayed, the server is still retrying (Sisimai: expired)",
    ),
    "rfc3834-02.eml": (
        ["person"],
        "'Automatic reply:' in the subject and no Auto-Submitted or auto-reply header: a"
        " subject alone never makes mail removable; no effect either way",
    ),
    "arf-18.eml": (
        ["no effect"],
        "feedback-type auth-failure: a DMARC report about the message, not a reader's no",
    ),
}

LISTKIT_VERDICT = {"hard": "hard", "soft": "soft", "complaint": "complaint", "ignored": "no effect"}


def listkit_verdicts(data: bytes) -> list[str]:
    report = parse(data)
    if report.kind == "auto_reply":
        return ["auto-reply"]
    if report.kind == "unknown":
        return ["person"]
    return sorted({LISTKIT_VERDICT[r.outcome] for r in report.recipients})


def test_every_real_message_has_sisimais_verdict():
    assert sorted(p.name for p in SISIMAI_CORPUS.glob("*.eml")) == sorted(SISIMAI)
    assert len(SISIMAI) >= 23 + 40


def test_the_table_of_real_messages_expected_and_actual(capsys):
    rows = []
    for name in sorted(SISIMAI):
        expected = LISTKIT_DIFFERS.get(name, (sisimai_verdicts(name), ""))[0]
        actual = listkit_verdicts((SISIMAI_CORPUS / name).read_bytes())
        rows.append((name, "/".join(sisimai_verdicts(name)), "/".join(expected), "/".join(actual)))
    with capsys.disabled():
        print(f"\n{'message':32} {'sisimai':12} {'expected':12} actual")
        for row in rows:
            print(f"{row[0]:32} {row[1]:12} {row[2]:12} {row[3]}")
    assert [r for r in rows if r[2] != r[3]] == []


@pytest.mark.parametrize("name", sorted(SISIMAI))
def test_each_real_message_gets_its_verdict(name):
    expected, _why = LISTKIT_DIFFERS.get(name, (sisimai_verdicts(name), ""))
    assert listkit_verdicts((SISIMAI_CORPUS / name).read_bytes()) == expected


def test_a_report_without_message_id_is_identified_by_its_bytes():
    data = (CORPUS / "qmail_no_mailbox.eml").read_bytes()
    assert parse(data).identity.startswith("sha256:")
    assert parse(data).identity == parse(data).identity
    assert parse(data + b"\n").identity != parse(data).identity


def test_a_postfix_bounce_is_a_bounce_even_though_it_says_auto_submitted():
    data = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in data
    assert parse(data).kind == "dsn"


def test_a_full_mailbox_with_a_permanent_status_is_soft():
    data = (CORPUS / "gmail_mailbox_full.eml").read_bytes()
    data = data.replace(b"Status: 4.2.2", b"Status: 5.2.2")
    assert [r.outcome for r in parse(data).recipients] == ["soft"]


def test_a_policy_refusal_is_soft_not_hard():
    data = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    data = data.replace(b"Status: 5.1.1", b"Status: 5.7.1").replace(
        b"550 5.1.1 <nobody@example.net>: Recipient address\n    rejected: User unknown in local"
        b" recipient table",
        b"554 5.7.1 <nobody@example.net>: Recipient address\n    rejected: Access denied",
    )
    assert [r.outcome for r in parse(data).recipients] == ["soft"]


def test_soft_bounce_setting_is_checked(tmp_path):
    def rule(value):
        return load_settings(tmp_path, environ={"LISTKIT_SOFT_BOUNCES": value}).soft_bounces

    assert rule("") == SoftRule(3, 30)  # unset: the default
    assert rule("5 / 10") == SoftRule(5, 10)
    with pytest.raises(ConfigError, match=r"^LISTKIT_SOFT_BOUNCES must be N/DAYS"):
        rule("three")
    with pytest.raises(ConfigError, match=r"^LISTKIT_SOFT_BOUNCES must be N/DAYS"):
        rule("0/30")


# ---------------------------------------------------------------------------
# Effects


def secret(db) -> bytes:
    """The workspace's LISTKIT_SECRET, which tells which delivery a token names."""
    return World(db).secret


def deliver(world, cid, email, token, list_slug="blog"):
    """A recent sent delivery of ``email`` with a known token."""
    from listkit.db import now

    d = world.deliver(cid, email, list_slug, sent_at=now())
    with world.db.conn:
        world.db.execute(
            "UPDATE deliveries SET legacy_token = ? WHERE id = ?", [token_bytes(token), d["id"]]
        )
    return d["id"]


def process(db, name, **kwargs):
    with db.conn:
        return apply(
            db, parse((CORPUS / name).read_bytes()), source="test", secret=secret(db), **kwargs
        )


def suppression(db, email):
    return db.execute(
        "SELECT reason, campaign_id FROM suppressions WHERE key = ?", [email]
    ).fetchone()


def statuses(db, email):
    return dict(
        db.execute(
            """SELECT l.slug, m.status FROM memberships m JOIN lists l ON l.id = m.list_id
               JOIN subscribers s ON s.id = m.subscriber_id WHERE s.key = ?""",
            [email],
        ).fetchall()
    )


MATCHES = {
    # file, recipient as the delivery knows it, token: how it must be matched
    "postfix_user_unknown.eml": ("nobody@example.net", "postfixtokenaaaa", "verp"),
    "exim_user_unknown.eml": ("gone@example.org", "eximtokenaaaaaaa", "message_id"),
    "qmail_no_mailbox.eml": ("nosuch@example.net", "qmailtokenaaaaaa", "verp"),
    "microsoft_recipient_not_found.eml": (
        "left@contoso.example",
        "microsofttokenaa",
        "message_id",
    ),
    "gmail_user_unknown.eml": ("missing.reader@gmail.com", "gmailtokenaaaaaa", "verp"),
    "ses_bounce.eml": ("ses.gone@example.net", "sesrelaytokenaaa", "recipient"),
    "gmail_old_text.eml": ("old.reader@example.org", "gmailoldtokenaaa", "message_id"),
}


@pytest.mark.parametrize("name", sorted(MATCHES))
def test_a_hard_bounce_suppresses_its_address_and_says_how_it_was_matched(ws, world, name):
    email, token, how = MATCHES[name]
    cid = world.campaign("launch")
    did = deliver(world, cid, email, token)
    deliver(world, cid, "bystander@example.com", "bystandertokenaa")
    [outcome] = process(ws.db, name)
    assert (outcome.matched_by, outcome.delivery_id, outcome.effect) == (how, did, "suppressed")
    assert suppression(ws.db, email) == ("hard_bounce", cid)
    assert statuses(ws.db, email) == {"blog": "bounced"}
    assert suppression(ws.db, "bystander@example.com") is None
    event = ws.db.execute(
        "SELECT delivery_id, kind, json_extract(detail, '$.matched_by') FROM events"
    ).fetchall()
    assert event == [(did, "bounce", how)]


def test_the_same_report_processed_twice_has_its_effect_once(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "full.reader@gmail.com", "gmailfullaaaaaaa")
    first = process(ws.db, "gmail_mailbox_full.eml", rule=SoftRule(2, 30))
    again = process(ws.db, "gmail_mailbox_full.eml", rule=SoftRule(2, 30))
    assert [o.effect for o in first + again] == ["counted", "duplicate"]
    assert ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert suppression(ws.db, "full.reader@gmail.com") is None


def test_soft_bounces_suppress_when_enough_fall_within_the_window(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "full.reader@gmail.com", "gmailfullaaaaaaa")
    data = (CORPUS / "gmail_mailbox_full.eml").read_bytes()
    effects = []
    for n in range(3):
        report = parse(data.replace(b"77f0SMTPIN", f"{n}SMTPIN".encode()))
        with ws.db.conn:
            effects += [
                o.effect
                for o in apply(
                    ws.db, report, source="t", secret=secret(ws.db), rule=SoftRule(3, 30)
                )
            ]
    assert effects == ["counted", "counted", "suppressed"]
    assert suppression(ws.db, "full.reader@gmail.com") == ("soft_bounce", cid)
    assert statuses(ws.db, "full.reader@gmail.com") == {"blog": "bounced"}


def test_old_soft_bounces_do_not_count(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "full.reader@gmail.com", "gmailfullaaaaaaa")
    process(ws.db, "gmail_mailbox_full.eml")
    with ws.db.conn:
        ws.db.execute("UPDATE events SET at = '2020-01-01T00:00:00+00:00'")
    data = (CORPUS / "gmail_mailbox_full.eml").read_bytes().replace(b"77f0", b"88f0")
    with ws.db.conn:
        [o] = apply(ws.db, parse(data), source="t", secret=secret(ws.db), rule=SoftRule(2, 30))
    assert o.effect == "counted"


def test_a_complaint_unsubscribes_from_every_list_and_suppresses(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "angry.reader@hotmail.example", "arftokenaaaaaaaa")
    world.list("customers", "angry.reader@hotmail.example")
    world.list("old", "angry.reader@hotmail.example", status="unsubscribed")
    [o] = process(ws.db, "arf_complaint.eml")
    assert (o.outcome, o.matched_by, o.effect) == ("complaint", "verp", "unsubscribed")
    assert suppression(ws.db, "angry.reader@hotmail.example") == ("complaint", cid)
    assert statuses(ws.db, "angry.reader@hotmail.example") == {
        "blog": "complained",
        "customers": "complained",
        "old": "unsubscribed",
    }
    kinds = ws.db.execute("SELECT kind FROM events").fetchall()
    assert kinds == [("complaint",)]


def test_an_address_already_suppressed_stays_so_and_keeps_its_first_reason(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    with ws.db.conn:
        ws.db.execute(
            """INSERT INTO suppressions (key, email, reason, created)
               VALUES ('nobody@example.net', 'nobody@example.net', 'unsubscribed', 'x')"""
        )
        ws.db.execute("UPDATE memberships SET status = 'unsubscribed'")
    [o] = process(ws.db, "postfix_user_unknown.eml")
    assert o.effect == "already"
    assert suppression(ws.db, "nobody@example.net") == ("unsubscribed", None)
    assert statuses(ws.db, "nobody@example.net") == {"blog": "unsubscribed"}


def test_a_bounce_for_no_known_delivery_changes_nothing(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "someone.else@example.com", "someoneelseaaaaa")
    [o] = process(ws.db, "ses_bounce.eml")
    assert (o.matched_by, o.effect) == (None, "unmatched")
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0
    assert ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


@pytest.mark.parametrize("name", ["vacation_reply.eml", "not_a_bounce.eml", "postfix_delayed.eml"])
def test_auto_replies_warnings_and_other_mail_have_no_effect(ws, world, name):
    cid = world.campaign("launch")
    for email, token in [
        ("dana@example.org", "vacationtokenaaa"),
        ("slow@example.org", "postfixdelayedaa"),
        ("nobody@example.net", "humantokenaaaaaa"),
    ]:
        deliver(world, cid, email, token)
    outcomes = process(ws.db, name)
    assert all(o.effect == "ignored" for o in outcomes)
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0
    assert ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


# ---------------------------------------------------------------------------
# listkit bounces import


def test_bounces_import_reads_a_folder_and_reports_each_message_once(run, ws, world, tmp_path):
    import shutil

    folder = tmp_path / "bounces"
    folder.mkdir()
    for eml in CORPUS.glob("*.eml"):
        shutil.copy(eml, folder)
    cid = world.campaign("launch")
    deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    deliver(world, cid, "angry.reader@hotmail.example", "arftokenaaaaaaaa")
    result = run("bounces", "import", str(folder))
    lines = result.output.splitlines()
    assert (
        "postfix_user_unknown.eml: delivery status report (postfix): nobody@example.net hard"
        " 5.1.1, matched by verp to launch: suppressed"
    ) in lines
    assert (
        "arf_complaint.eml: complaint (arf): angry.reader@hotmail.example complaint,"
        " matched by verp to launch: unsubscribed"
    ) in lines
    assert "not_a_bounce.eml: not a bounce or complaint (left alone)" in lines
    assert "vacation_reply.eml: auto-reply (ignored)" in lines
    assert lines[-1].startswith("13 messages;")
    again = run("bounces", "import", str(folder), "--json")
    import json

    effects = [r["effect"] for m in json.loads(again.output) for r in m["recipients"]]
    assert "suppressed" not in effects and "unsubscribed" not in effects
    assert effects.count("duplicate") == 2


def test_bounces_import_reads_mbox_and_maildir(run, ws, world, tmp_path):
    import mailbox

    cid = world.campaign("launch")
    deliver(world, cid, "nosuch@example.net", "qmailtokenaaaaaa")
    deliver(world, cid, "missing.reader@gmail.com", "gmailtokenaaaaaa")
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    box.add((CORPUS / "qmail_no_mailbox.eml").read_bytes())
    box.add((CORPUS / "not_a_bounce.eml").read_bytes())
    box.close()
    md = mailbox.Maildir(tmp_path / "Maildir")
    md.add((CORPUS / "gmail_user_unknown.eml").read_bytes())
    result = run("bounces", "import", str(tmp_path / "bounces.mbox"), "-q")
    assert result.output == ("2 messages; 1 bounce; 1 not a bounce or complaint; 1 suppressed\n")
    result = run("bounces", "import", str(tmp_path / "Maildir"), "-q")
    assert result.output == "1 message; 1 delivery status report; 1 suppressed\n"
    reasons = ws.db.execute("SELECT email, reason FROM suppressions ORDER BY email").fetchall()
    assert reasons == [
        ("missing.reader@gmail.com", "hard_bounce"),
        ("nosuch@example.net", "hard_bounce"),
    ]
    assert len(md) == 1  # import only reads


def test_a_message_nested_too_deeply_to_parse_is_left_alone_and_the_others_are_read(
    run, ws, world, tmp_path
):
    # Anyone can mail the bounce address: such a message must not stop every fetch.
    cid = world.campaign("launch")
    deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    folder = tmp_path / "in"
    folder.mkdir()
    nested = b"From: x@example.org\r\nSubject: hi\r\n"
    nested += b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(3000)
    )
    (folder / "a_nested.eml").write_bytes(nested)
    (folder / "b_rfc822.eml").write_bytes(
        b"From: x@example.org\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 2000 + b"x\r\n"
    )
    (folder / "c_bounce.eml").write_bytes((CORPUS / "postfix_user_unknown.eml").read_bytes())
    lines = run("bounces", "import", str(folder)).output.splitlines()
    assert (
        lines[0]
        == "a_nested.eml: not a bounce or complaint (left alone) (unreadable: nested too deeply)"
    )
    assert (
        lines[1]
        == "b_rfc822.eml: not a bounce or complaint (left alone) (unreadable: nested too deeply)"
    )
    assert lines[2].endswith("matched by verp to launch: suppressed")
    assert (
        lines[-1]
        == "3 messages; 1 delivery status report; 2 not a bounce or complaint; 1 suppressed"
    )


def test_bounces_import_of_a_missing_path_is_a_clear_error(run, tmp_path):
    result = run("bounces", "import", str(tmp_path / "nope"), ok=False)
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'nope'}: no such file or folder\n"


def test_a_bad_soft_bounce_setting_is_named(run, tmp_path, monkeypatch):
    monkeypatch.setenv("LISTKIT_SOFT_BOUNCES", "lots")
    result = run("bounces", "import", str(CORPUS), ok=False)
    assert result.output == (
        "Error: LISTKIT_SOFT_BOUNCES must be N/DAYS such as 3/30 (3 soft bounces in 30 days),"
        " not 'lots'\n"
    )


# ---------------------------------------------------------------------------
# Report: bounce and complaint rates


def complaint_world(ws, world, sent: int, complaints: int, hard: int = 0):
    cid = world.campaign("big")
    for i in range(sent):
        deliver(
            world,
            cid,
            f"r{i}@example.com",
            f"{i:06d}".translate(str.maketrans("0123456789", "abcdefghij")) + "tokenaaaaa",
        )
    rows = [(t, e) for e, t in tokens(ws.db).items()]
    data = (CORPUS / "arf_complaint.eml").read_bytes()
    for n, (token, email) in enumerate(rows[:complaints]):
        message = (
            data.replace(b"arftokenaaaaaaaa", token.encode())
            .replace(b"angry.reader@hotmail.example", email.encode())
            .replace(b"fbl.2026", f"fbl{n}.2026".encode())
        )
        with ws.db.conn:
            apply(ws.db, parse(message), source="t", secret=secret(ws.db))
    bounce = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    for n, (token, email) in enumerate(rows[complaints : complaints + hard]):
        message = (
            bounce.replace(b"postfixtokenaaaa", token.encode())
            .replace(b"nobody@example.net", email.encode())
            .replace(b"20261130091403.", f"{n}.".encode())
        )
        with ws.db.conn:
            apply(ws.db, parse(message), source="t", secret=secret(ws.db))
    return cid


def test_report_gives_bounce_and_complaint_rates_per_list_and_campaign(ws, world):
    from listkit.sales.reports import build_report

    complaint_world(ws, world, sent=200, complaints=1, hard=4)
    [row] = build_report(ws.db, "campaign")["rows"]
    assert (row["bounced"], row["complaints"]) == (4, 1)
    assert (row["bounce_rate"], row["complaint_rate"]) == (4 / 200, 1 / 200)
    [blog] = [r for r in build_report(ws.db, "list")["rows"] if r["list"] == "blog"]
    assert (blog["complaints"], blog["complaint_rate"]) == (1, 1 / 200)


@pytest.mark.parametrize(("complaints", "level"), [(1, None), (2, "0.1%"), (4, "0.3%")])
def test_report_warns_when_a_campaigns_complaint_rate_passes_the_limits(
    run, ws, world, complaints, level
):
    complaint_world(ws, world, sent=1000, complaints=complaints)
    output = run("report", "--by", "campaign").output
    warnings = [line for line in output.splitlines() if line.startswith("Warning")]
    if level is None:
        assert warnings == []
    elif level == "0.1%":
        assert warnings == [
            f"Warning: campaign big has a complaint rate of 0.20% ({complaints} of 1000 sent),"
            " above 0.1%: mailbox providers start filtering at this level"
        ]
    else:
        assert warnings == [
            f"Warning: campaign big has a complaint rate of 0.40% ({complaints} of 1000 sent),"
            " above 0.3% (Gmail's limit): stop sending to this audience until it falls"
        ]


def test_a_report_with_raw_8bit_bytes_in_its_headers_is_still_read():
    data = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    data = data.replace(
        b"Message-Id: <20261130091403", b"Message-Id: <\xe9t\xe9-20261130091403"
    ).replace(b"To: bounces+postfixtokenaaaa", b"To: \xff bounces+postfixtokenaaaa")
    report = parse(data)
    assert (report.kind, report.token) == ("dsn", "postfixtokenaaaa")
    assert [r.outcome for r in report.recipients] == ["hard"]


@pytest.mark.parametrize("charset", [b"no-such-charset", b"utf\x00-8"])
def test_a_bounce_whose_charset_is_unknown_or_garbage_is_read_as_utf8(charset):
    data = (CORPUS / "qmail_no_mailbox.eml").read_bytes()
    data = data.replace(
        b"Subject: failure notice\n",
        b'Subject: failure notice\nContent-Type: text/plain; charset="' + charset + b'"\n',
    )
    report = parse(data)
    assert [(r.email, r.outcome) for r in report.recipients] == [("nosuch@example.net", "hard")]


@pytest.mark.parametrize("charset", [b"u\xfff-8", b"utf\x00-8"])
def test_a_subject_encoded_in_a_garbage_charset_does_not_stop_the_reading(charset):
    data = (CORPUS / "qmail_no_mailbox.eml").read_bytes()
    data = data.replace(b"Subject: failure notice", b"Subject: =?" + charset + b"?q?failure?=")
    report = parse(data)
    assert [(r.email, r.outcome) for r in report.recipients] == [("nosuch@example.net", "hard")]


def test_a_second_bounces_fetch_while_one_runs_stops_with_a_clear_error(
    run, workspace, monkeypatch
):
    import fcntl
    import os

    monkeypatch.setenv("LISTKIT_IMAP_URL", "imaps://u:pw@127.0.0.1:1/INBOX")
    fd = os.open(workspace / ".listkit-bounces.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run("bounces", "fetch", ok=False)
    finally:
        os.close(fd)
    assert result.output == (
        "Error: another `listkit bounces fetch` is running in this workspace; "
        "try again when it has finished\n"
    )


def rate_cells(html: str) -> dict[tuple[str, str], tuple[float, str]]:
    """(row, rate name) -> (data-value, the text shown) for each rate cell of the table."""
    import re

    return {
        (row, name): (float(value), shown)
        for row, name, value, shown in re.findall(
            r'<td data-row="([^"]+)" data-rate="([a-z_]+)" data-value="([^"]+)">([^<]*)</td>',
            html,
        )
    }


@pytest.mark.parametrize(("complaints", "level"), [(1, None), (2, "0.1%"), (4, "0.3%")])
def test_html_report_shows_bounce_and_complaint_rates_and_the_warnings(
    run, ws, world, tmp_path, complaints, level
):
    import json
    import re

    complaint_world(ws, world, sent=1000, complaints=complaints, hard=3)
    out = tmp_path / "r.html"
    run("report", "--by", "campaign", "--html", str(out))
    html = out.read_text()
    assert "<th>bounce %</th><th>compl.</th><th>compl. %</th>" in html
    [row] = json.loads(run("report", "--by", "campaign", "--json").output)["rows"]
    cells = rate_cells(html)
    assert cells[("big", "bounce_rate")] == (row["bounce_rate"], "0.30%")
    assert cells[("big", "complaint_rate")] == (row["complaint_rate"], f"{complaints / 10:.2f}%")
    warnings = re.findall(r'<p class="warn complaint[^"]*">(.*?)</p>', html)
    text = [
        line
        for line in run("report", "--by", "campaign").output.splitlines()
        if line.startswith("Warning")
    ]
    assert len(warnings) == len(text) == (0 if level is None else 1)
    if level is not None:
        # The same words as the text report, with the limit passed.
        assert warnings[0] == text[0].removeprefix("Warning: ")
        assert f"above {level}" in warnings[0]
    if level == "0.3%":
        assert '<p class="warn complaint stop">' in html


# ---------------------------------------------------------------------------
# A delivery that was sent, then bounced


def test_a_delivery_that_bounced_after_it_was_sent_shows_as_bounced_in_status(run, ws, world):
    import json

    cid = world.campaign("launch")
    deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    deliver(world, cid, "fine@example.net", "finetokenaaaaaaa")
    process(ws.db, "postfix_user_unknown.eml")
    data = json.loads(run("status", "launch", "--json").output)
    assert data["counts"]["sent"] == 2
    assert data["bounced_after_sent"] == 1
    [row] = [r for r in data["problems"] if r["state"] == "bounced"]
    assert (row["email"], row["code"]) == ("nobody@example.net", "5.1.1")
    assert "User unknown" in row["reply"]
    text = run("status", "launch").output
    assert "sent 2 (1 bounced after it was sent: never sent again)" in text
    assert "nobody@example.net" in text and "bounced" in text


def test_retry_never_touches_a_delivery_that_bounced_after_it_was_sent(run, ws, world):
    cid = world.campaign("launch")
    did = deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    process(ws.db, "postfix_user_unknown.eml")
    for which in ("--unknown", "--failed", "--deferred"):
        assert run("retry", "launch", which).output.startswith("0 ")
    state = ws.db.execute("SELECT state FROM deliveries WHERE id = ?", [did]).fetchone()[0]
    assert state == "sent"


def test_a_bounce_counts_for_its_campaign_even_when_another_campaign_suppressed_first(ws, world):
    from listkit.sales.reports import build_report

    first = world.campaign("first")
    deliver(world, first, "nobody@example.net", "postfixtokenaaaa")
    second = world.campaign("second")
    deliver(world, second, "nobody@example.net", "secondtokenaaaaa")
    bounce = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    with ws.db.conn:  # the second campaign's bounce comes back first and suppresses
        apply(
            ws.db,
            parse(
                bounce.replace(b"postfixtokenaaaa", b"secondtokenaaaaa").replace(
                    b"20261130091403.", b"2."
                )
            ),
            source="t",
            secret=secret(ws.db),
        )
    process(ws.db, "postfix_user_unknown.eml")  # then the first campaign's
    rows = {r["campaign"]: r for r in build_report(ws.db, "campaign")["rows"]}
    assert (rows["first"]["bounced"], rows["second"]["bounced"]) == (1, 1)
    assert rows["first"]["bounce_rate"] == 1.0
    [blog] = build_report(ws.db, "list")["rows"]
    assert blog["bounced"] == 2


# ---------------------------------------------------------------------------
# One classifier: the same reply, at send time and in a report later

SAME_REPLY = [
    # (code, reply text as the server wrote it, the verdict both must give)
    (550, "5.2.1 The email account that you tried to reach is disabled.", "soft"),
    (554, "5.4.1 Recipient address rejected: Access denied", "hard"),
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "hard",
    ),
    (550, "Unknown user (#5.5.0)", "hard"),
    (550, "5.1.1 No such user here", "hard"),
    (552, "5.2.2 Mailbox full", "soft"),
    (550, "5.7.1 Message rejected as spam", "soft"),
    (501, "5.1.8 Sender address rejected", "soft"),
    (550, "Requested action not taken: mailbox unavailable", "soft"),
    (451, "4.3.0 Temporary lookup failure", "soft"),
]


def dsn_with(code: int, text: str) -> bytes:
    """Postfix's report of a refusal (the fixture), carrying this reply."""
    from listkit.mail.replies import reply_parts

    data = (CORPUS / "postfix_user_unknown.eml").read_bytes()
    status = reply_parts(text)[1] or f"{str(code)[0]}.0.0"
    data = data.replace(b"Status: 5.1.1", f"Status: {status}".encode())
    return data.replace(
        b"550 5.1.1 <nobody@example.net>: Recipient address\n    rejected: User unknown in local"
        b" recipient table",
        f"{code} {text}".encode(),
    )


@pytest.mark.parametrize(("code", "text", "verdict"), SAME_REPLY)
def test_a_refusal_at_send_time_and_in_a_later_report_get_the_same_verdict(code, text, verdict):
    from listkit.mail.replies import classify

    [report_time] = [r.outcome for r in parse(dsn_with(code, text)).recipients]
    assert (classify(code, text, command="RCPT TO"), report_time) == (verdict, verdict)


def test_one_classifier_serves_send_and_inbox():
    import listkit.inbox.bounces
    import listkit.send.run
    from listkit.mail import replies

    assert listkit.inbox.bounces.classify is replies.classify
    assert listkit.send.run.classify is replies.classify
    assert not hasattr(listkit.send.run, "is_hard_bounce")


def test_a_refusal_of_the_sender_or_the_content_is_never_hard():
    from listkit.mail.replies import classify

    assert classify(550, "5.1.1 User unknown", command="MAIL FROM") == "soft"
    assert classify(550, "Unknown user", command="the final dot") == "soft"
    assert classify(550, "5.1.1 User unknown", command="the final dot") == "hard"


@pytest.fixture
def refusing_server():
    from tests import smtp_server

    class Refusing(smtp_server.FaultHandler):
        replies: typing.ClassVar[dict[str, str]] = {}

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address in self.replies:
                return self.replies[address]
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    handler = Refusing()
    controller, handler = smtp_server.start(handler=handler)
    yield controller, handler
    controller.stop()


def test_a_real_server_refusal_suppresses_exactly_what_its_report_would(
    run, workspace, ws, refusing_server
):
    # A real aiosmtpd server answers RCPT with each reply; what send suppresses is what
    # the same words in a Postfix report would suppress.
    from tests.test_send import setup_campaign

    controller, handler = refusing_server
    addresses = [f"r{i}@example.com" for i in range(len(SAME_REPLY))]
    handler.replies = {
        a: f"{code} {text}" for a, (code, text, _v) in zip(addresses, SAME_REPLY, strict=True)
    }
    setup_campaign(run, workspace, controller.port, addresses)
    run("send", "t", "--yes", ok=False)
    suppressed = {
        r[0] for r in ws.db.execute("SELECT email FROM suppressions WHERE reason = 'hard_bounce'")
    }
    expected = {
        a for a, (_c, _t, verdict) in zip(addresses, SAME_REPLY, strict=True) if verdict == "hard"
    }
    assert suppressed == expected
    from_reports = {
        a
        for a, (code, text, _v) in zip(addresses, SAME_REPLY, strict=True)
        if [r.outcome for r in parse(dsn_with(code, text)).recipients] == ["hard"]
    }
    assert from_reports == suppressed


# ---------------------------------------------------------------------------
# Only listkit's own reports count; a person's mail is never a report


def forged(kind: str, victim: str) -> bytes:
    """What anyone can mail to the plain bounce address, naming a subscriber."""
    if kind == "dsn":
        data = (CORPUS / "postfix_user_unknown.eml").read_bytes()
        data = data.replace(b"postfixtokenaaaa", b"").replace(b"+@", b"@")
        data = re.sub(rb"Message-I[dD]: <[a-z2-7]{16}\.lk@[^>]+>", b"Message-ID: <x@y>", data)
        return data.replace(b"nobody@example.net", victim.encode())
    if kind == "arf":
        data = (CORPUS / "arf_complaint.eml").read_bytes()
        data = data.replace(b"arftokenaaaaaaaa", b"").replace(b"+@", b"@")
        data = re.sub(rb"<[a-z2-7]{16}\.lk@", b"<forged@", data)
        return data.replace(b"angry.reader@hotmail.example", victim.encode())
    return (
        b"From: MAILER-DAEMON@example.org\nTo: bounces@example.com\nSubject: failure notice\n"
        b"Message-ID: <forged.1@example.org>\n\nThis message could not be delivered to "
        + victim.encode()
        + b": 550 5.1.1 user unknown\n"
    )


@pytest.mark.parametrize("kind", ["dsn", "arf", "text"])
def test_with_verp_a_report_without_a_token_or_message_id_suppresses_nobody(ws, world, kind):
    cid = world.campaign("launch")
    deliver(world, cid, "victim@example.org", "victimtokenaaaaa")
    report = parse(forged(kind, "victim@example.org"))
    assert (report.token, report.message_token) == (None, None)
    with ws.db.conn:
        outcomes = apply(ws.db, report, source="t", secret=secret(ws.db), verp=True)
    assert [(o.matched_by, o.effect) for o in outcomes] == [(None, "unmatched")]
    assert suppression(ws.db, "victim@example.org") is None
    assert ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_without_verp_only_a_report_in_a_mail_servers_form_matches_by_recipient(ws, world):
    cid = world.campaign("launch")
    deliver(world, cid, "victim@example.org", "victimtokenaaaaa")
    with ws.db.conn:
        [text] = apply(
            ws.db, parse(forged("text", "victim@example.org")), source="t", secret=secret(ws.db)
        )
    assert (text.matched_by, text.effect) == (None, "unmatched")
    with ws.db.conn:
        [dsn] = apply(
            ws.db, parse(forged("dsn", "victim@example.org")), source="t", secret=secret(ws.db)
        )
    assert (dsn.matched_by, dsn.effect) == ("recipient", "suppressed")


def test_a_token_in_the_report_still_counts_with_verp(ws, world):
    cid = world.campaign("launch")
    did = deliver(world, cid, "nobody@example.net", "postfixtokenaaaa")
    [o] = process(ws.db, "postfix_user_unknown.eml", verp=True)
    assert (o.matched_by, o.delivery_id, o.effect) == ("verp", did, "suppressed")


PERSON_UNDELIVERABLE = b"""From: Ann Reader <ann@example.org>
To: bounces@example.com
Subject: Re: Undeliverable: your offer
Message-ID: <reply.1@example.org>
Content-Type: text/plain; charset=utf-8

Hi, I forwarded your offer to my colleague bob@example.org but he says that
address does not exist any more. Could you send it to me again?
"""

PERSON_VACATION = b"""From: Ann Reader <ann@example.org>
To: bounces+victimtokenaaaaa@example.com
Subject: Vacation plans
Message-ID: <reply.2@example.org>
Content-Type: text/plain; charset=utf-8

Thanks for the offer! We are going to the coast next week, any tips?
"""


@pytest.mark.parametrize(
    "data", [PERSON_UNDELIVERABLE, PERSON_VACATION], ids=["undeliverable", "vacation"]
)
def test_a_persons_message_is_no_report_suppresses_nobody_and_stays(ws, world, data):
    from listkit.inbox.bounces import process as process_messages

    cid = world.campaign("launch")
    deliver(world, cid, "bob@example.org", "bobtokenaaaaaaaa")
    deliver(world, cid, "ann@example.org", "victimtokenaaaaa")
    assert parse(data).kind == "unknown"
    with ws.db.conn:
        [handled] = process_messages(
            ws.db, [("m", data)], source="t", secret=secret(ws.db), rule=SoftRule(3, 30)
        )
    assert (handled.kind, handled.understood) == ("unknown", False)
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("name", "removable"),
    [
        ("postfix_user_unknown.eml", True),  # multipart/report, matched
        ("vacation_reply.eml", True),  # Auto-Submitted
        ("exim_user_unknown.eml", True),  # X-Failed-Recipients
        ("qmail_no_mailbox.eml", False),  # known by its words alone
        ("not_a_bounce.eml", False),
    ],
)
def test_fetch_may_remove_only_what_form_or_headers_identify(ws, world, name, removable):
    from listkit.inbox.bounces import process as process_messages

    cid = world.campaign("launch")
    for email, token in [
        ("nobody@example.net", "postfixtokenaaaa"),
        ("gone@example.org", "eximtokenaaaaaaa"),
        ("nosuch@example.net", "qmailtokenaaaaaa"),
    ]:
        deliver(world, cid, email, token)
    data = (CORPUS / name).read_bytes()
    with ws.db.conn:
        [h] = process_messages(
            ws.db, [(name, data)], source="t", secret=secret(ws.db), rule=SoftRule(3, 30), verp=True
        )
    assert h.understood is removable


def test_a_report_for_no_delivery_of_ours_stays_in_the_mailbox_even_with_no_effect(ws, world):
    from listkit.inbox.bounces import process as process_messages

    world.campaign("launch")
    delay = (CORPUS / "postfix_delayed.eml").read_bytes().replace(b"postfixdelayedaa", b"other")
    messages = [("forged", forged("dsn", "x@example.org")), ("delay", delay)]
    with ws.db.conn:
        handled = process_messages(
            ws.db, messages, source="t", secret=secret(ws.db), rule=SoftRule(3, 30), verp=True
        )
    assert [(h.kind, [o.effect for o in h.outcomes], h.understood) for h in handled] == [
        ("dsn", ["unmatched"], False),
        ("dsn", ["ignored"], False),
    ]


class ReadOnlyMailbox:
    """Stands in for IMAPMailbox: one bounce at UID 7, removals recorded."""

    uidvalidity = 1

    def __init__(self, settings):
        self.removed: list[int] = []
        ReadOnlyMailbox.opened = self

    def open(self):
        return self

    def uids_after(self, last_uid: int) -> list[int]:
        return [7] if last_uid < 7 else []

    def fetch(self, uid: int) -> bytes:
        return (CORPUS / "exim_user_unknown.eml").read_bytes()

    def remove(self, uids: list[int], move_to: str | None) -> str:
        self.removed += uids
        return "deleted"

    def close(self) -> None:
        pass


def test_fetch_calls_its_after_commit_hook_once_committed_before_any_message_is_removed(
    workspace, ws, world, monkeypatch
):
    # The hook replaces a test-only environment variable: a run killed there must
    # find the suppression committed and the mailbox untouched.
    import sqlite3

    from listkit.inbox import bounces
    from listkit.workspace import Workspace

    monkeypatch.setenv("LISTKIT_IMAP_URL", "imaps://u:pw@127.0.0.1:1/INBOX")
    monkeypatch.setattr(bounces, "IMAPMailbox", ReadOnlyMailbox)
    cid = world.campaign("launch")
    deliver(world, cid, "gone@example.org", "eximtokenaaaaaaa")
    seen = []

    def after_commit() -> None:
        other = sqlite3.connect(ws.settings.db_path)
        try:
            seen.append(
                (
                    other.execute("SELECT key FROM suppressions").fetchall(),
                    list(ReadOnlyMailbox.opened.removed),
                )
            )
        finally:
            other.close()

    reader = Workspace(workspace)  # settings read with LISTKIT_IMAP_URL set
    try:
        summary = bounces.fetch(reader, after_commit=after_commit)
    finally:
        reader.close()
    assert seen == [([("gone@example.org",)], [])]
    assert ReadOnlyMailbox.opened.removed == [7] and summary.removed == 1
