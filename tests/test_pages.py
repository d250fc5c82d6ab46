"""The reader's pages through Starlette's TestClient: unsubscribe, signup, confirm, click."""

from __future__ import annotations

import re
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from listkit.audience.signups import expiry
from listkit.audience.suppressions import suppress
from listkit.mail.tracking import click_url, confirm_token, link_id, unsubscribe_url
from listkit.web import create_app
from tests.waiting import wait_until

PERSON = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def set_smtp(ws, url):
    env = (ws.root / ".env").read_text()
    (ws.root / ".env").write_text(
        re.sub(r"(?m)^LISTKIT_SMTP_URL=.*$", f"LISTKIT_SMTP_URL={url}", env)
    )
    ws._settings = None  # read the new setting


@pytest.fixture
def client(ws, free_port):
    # Confirmations go nowhere unless a test starts a server (the `smtp` fixture):
    # a closed loopback port, never a server another program may run on 1025.
    set_smtp(ws, f"smtp://127.0.0.1:{free_port}?timeout=2")
    app = create_app(ws)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as c:
        c.headers["user-agent"] = PERSON
        yield c


@pytest.fixture
def delivery(ws, world):
    world.list("blog", "ann@example.com")
    ws.db.execute("UPDATE lists SET title = 'The Blog' WHERE slug = 'blog'")
    world.list("shop", "ann@example.com")
    cid = world.campaign("spring")
    return world.deliver(cid, "ann@example.com", "blog")


def path_of(ws, token):
    return unsubscribe_url("", ws.settings.secret_key(), token)


def state(ws):
    """Everything an unsubscribe may change."""
    return (
        ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
        ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0],
        sorted(ws.db.execute("SELECT list_id, status FROM memberships").fetchall()),
    )


def statuses(ws, email="ann@example.com"):
    return dict(
        ws.db.execute(
            """SELECT l.slug, m.status FROM memberships m JOIN lists l ON l.id = m.list_id
               JOIN subscribers s ON s.id = m.subscriber_id WHERE s.key = ?""",
            [email],
        ).fetchall()
    )


# --- unsubscribe ------------------------------------------------------------------


def test_the_unsubscribe_page_names_the_list_and_get_or_head_change_nothing(ws, client, delivery):
    before = state(ws)
    r = client.get(path_of(ws, delivery["token"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Unsubscribe from The Blog" in r.text and "from everything" in r.text
    assert "<script" not in r.text
    assert client.head(path_of(ws, delivery["token"])).status_code == 200
    assert state(ws) == before


def test_a_one_click_post_unsubscribes_from_the_list_once_and_answers_200(ws, client, delivery):
    path = path_of(ws, delivery["token"])
    for _ in range(3):
        r = client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert statuses(ws) == {"blog": "unsubscribed", "shop": "active"}
    events = ws.db.execute("SELECT delivery_id, kind, agent FROM events").fetchall()
    assert events == [(delivery["id"], "unsubscribe", PERSON)]
    reason = ws.db.execute("SELECT status_reason FROM memberships WHERE status = 'unsubscribed'")
    assert "campaign" in reason.fetchone()[0]


def test_a_multipart_one_click_body_is_understood(ws, client, delivery):
    r = client.post(path_of(ws, delivery["token"]), files={"List-Unsubscribe": (None, "One-Click")})
    assert r.status_code == 200
    assert statuses(ws)["blog"] == "unsubscribed"


def test_the_everything_button_unsubscribes_from_every_list_and_suppresses(ws, client, delivery):
    r = client.post(path_of(ws, delivery["token"]), data={"scope": "all"})
    assert r.status_code == 200 and "on any list" in r.text
    assert statuses(ws) == {"blog": "unsubscribed", "shop": "unsubscribed"}
    row = ws.db.execute("SELECT reason, campaign_id FROM suppressions").fetchone()
    assert row[0] == "unsubscribed" and row[1] is not None


def test_tampered_unknown_and_malformed_unsubscribe_links_get_404_and_change_nothing(
    ws, client, delivery
):
    good = path_of(ws, delivery["token"])
    unknown = path_of(ws, "aaaaaaaaaaaaaaaa")
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    other_token = good.replace(delivery["token"], "bbbbbbbbbbbbbbbb")
    before = state(ws)
    for path in (unknown, tampered, other_token, "/u/short/sig", "/u/" + "é" * 16 + "/x"):
        assert client.get(path).status_code == 404, path
        r = client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert r.status_code == 404, path
        assert "Traceback" not in r.text
    assert state(ws) == before


def test_an_unsubscribe_post_needs_the_one_click_body_and_a_small_one(ws, client, delivery):
    path = path_of(ws, delivery["token"])
    before = state(ws)
    assert client.post(path, content="", headers=ONE_CLICK).status_code == 400
    assert client.post(path, content="x=1", headers=ONE_CLICK).status_code == 400
    big = "List-Unsubscribe=One-Click&pad=" + "x" * 20000
    assert client.post(path, content=big, headers=ONE_CLICK).status_code == 413
    assert client.put(path, content="List-Unsubscribe=One-Click").status_code == 405
    assert client.delete(path).status_code == 405
    assert state(ws) == before


def set_env(ws, name, value):
    env = (ws.root / ".env").read_text()
    (ws.root / ".env").write_text(
        re.sub(rf"(?m)^{name}=.*\n", "", env) + ("" if value is None else f"{name}={value}\n")
    )
    ws._settings = None


def everything_form(text):
    return 'name="scope" value="all"' in text and "Unsubscribe from everything" in text


def test_a_one_click_result_says_which_list_was_left_that_the_campaign_stops_and_offers_everything(
    ws, client, delivery
):
    path = path_of(ws, delivery["token"])
    r = client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert r.status_code == 200
    text = " ".join(r.text.split())
    assert "You left The Blog" in text
    assert "This campaign and its follow-ups will not reach you, on any list." in text
    assert "You are still on Shop." in text
    assert everything_form(r.text)
    # The page's "everything" then does what it says.
    r = client.post(path, data={"scope": "all"})
    assert "will receive nothing more from us, on any list" in r.text
    assert statuses(ws) == {"blog": "unsubscribed", "shop": "unsubscribed"}


def test_a_used_unsubscribe_link_says_so_and_still_offers_everything(ws, client, delivery):
    path = path_of(ws, delivery["token"])
    client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    before = state(ws)
    r = client.get(path)
    assert r.status_code == 200
    assert "You are already unsubscribed from The Blog" in r.text
    assert "Unsubscribe from The Blog</button>" not in r.text  # nothing asked again
    assert everything_form(r.text)
    assert state(ws) == before
    client.post(path, data={"scope": "all"})
    r = client.get(path)
    assert "You are already unsubscribed from everything" in r.text
    assert "<form" not in r.text


def test_a_broken_unsubscribe_link_gets_a_page_saying_what_to_do(ws, client, delivery):
    good = path_of(ws, delivery["token"])
    before = state(ws)
    for path in (good[:-3], path_of(ws, "aaaaaaaaaaaaaaaa"), "/u/short/sig"):
        for r in (
            client.get(path),
            client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK),
        ):
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html")
            text = " ".join(r.text.split())
            assert "This unsubscribe link does not work" in text
            assert "you@example.com" in text  # whom to write to instead
            assert "Unsubscribe" in text and "ann@example.com" not in text
    assert state(ws) == before


def test_a_broken_click_link_gets_a_page_not_a_bare_404(ws, client, delivery):
    r = client.get(f"/c/{delivery['token']}/abcdefgh/forged")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "This link does not work" in r.text


def test_the_reader_pages_link_back_to_the_site(ws, client, delivery):
    path = path_of(ws, delivery["token"])
    # Without LISTKIT_SITE_URL: the site LISTKIT_BASE_URL is on.
    assert '<a href="https://example.com/">' in client.get(path).text
    set_env(ws, "LISTKIT_SITE_URL", "https://blog.example.org/")
    app = create_app(ws)
    with TestClient(app, raise_server_exceptions=False) as c:
        for r in (
            c.get(path),
            c.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK),
            c.get(path),
            c.get("/u/short/sig"),
        ):
            assert '<a href="https://blog.example.org/">Back to blog.example.org</a>' in r.text


# --- signup and confirmation ----------------------------------------------------------


@pytest.fixture
def smtp(ws, server):
    controller, handler = server
    set_smtp(ws, f"smtp://127.0.0.1:{controller.port}?timeout=5")
    return handler


def confirmation_link(handler, to):
    for _mid, rcpt, data in handler.messages:
        if rcpt == to:
            msg = message_from_bytes(data, policy=default)
            text = msg.get_body(("plain",)).get_content()
            line = next(w for w in text.split() if "/confirm/" in w)
            return urlsplit(line).path.removeprefix("/listkit"), msg
    return None


def signup_states(ws):
    return [r[0] for r in ws.db.execute("SELECT state FROM signups ORDER BY id")]


def test_a_signup_looks_the_same_whoever_the_address_is(ws, client, world, smtp):
    world.list("blog", "active@example.com")
    world.list("blog", "gone@example.com", status="unsubscribed")
    world.list("blog", "waiting@example.com", status="pending")
    answers = set()
    for email in (
        "new@example.com",
        "active@example.com",
        "gone@example.com",
        "waiting@example.com",
    ):
        r = client.post("/s/blog", data={"email": email, "name": "X"})
        answers.add((r.status_code, r.text, tuple(sorted(r.headers.keys()))))
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    smtp.wait_for(lambda: len(smtp.messages) == 3)
    assert sorted(smtp.recipients()) == [
        "gone@example.com",
        "new@example.com",
        "waiting@example.com",
    ]
    assert statuses(ws, "active@example.com") == {"blog": "active"}
    assert statuses(ws, "new@example.com") == {"blog": "pending"}
    assert statuses(ws, "gone@example.com") == {"blog": "unsubscribed"}


def test_every_signup_answer_waits_for_the_same_floor_whoever_the_address_is(
    ws, client, world, monkeypatch
):
    # What varies beneath the floor (a commit waiting for the writer, the mailer
    # busy with an earlier signup) must not show in the answer's time.
    from listkit.web import pages

    waits = []

    async def not_before(when):
        waits.append(when)

    monkeypatch.setattr(pages, "_not_before", not_before)
    world.list("blog", "active@example.com")
    world.list("blog", "gone@example.com", status="unsubscribed")
    world.list("blog", "waiting@example.com", status="pending")
    forms = [{"email": e} for e in ("new@example.com", "active@example.com", "gone@example.com")]
    forms += [{"email": "waiting@example.com"}, {"email": "bot@example.com", "website": "x"}]
    before = time.monotonic()
    for form in forms:
        assert client.post("/s/blog", data=form).status_code == 200
    assert len(waits) == 5
    assert all(
        before + pages.ANSWER_FLOOR <= w <= time.monotonic() + pages.ANSWER_FLOOR for w in waits
    )


def test_a_confirmation_needs_a_post_and_keeps_the_consent_evidence(ws, client, world, smtp):
    world.list("blog")
    r = client.post(
        "/s/blog",
        data={"email": "new@example.com", "name": "Ann", "form": "sidebar"},
        headers={"referer": "https://blog.example.com/post/1"},
    )
    assert r.status_code == 200
    smtp.wait_for(lambda: confirmation_link(smtp, "new@example.com") is not None)
    path, msg = confirmation_link(smtp, "new@example.com")
    assert msg["To"].addresses[0].display_name == "Ann"
    assert msg["Subject"] == "Please confirm your subscription to Blog"
    wait_until(lambda: signup_states(ws) == ["mailed"])  # recorded after the server's answer
    r = client.get(path)
    assert r.status_code == 200 and "Confirm my subscription" in r.text
    assert client.head(path).status_code == 200
    assert statuses(ws, "new@example.com") == {"blog": "pending"}
    for _ in range(2):  # a replayed confirmation changes nothing more
        r = client.post(path)
        assert r.status_code == 200 and "You are subscribed" in r.text
    assert statuses(ws, "new@example.com") == {"blog": "active"}
    row = ws.db.execute(
        """SELECT consent_method, consent_source, consent_ip, confirmed_at IS NOT NULL,
                  confirm_ip FROM memberships"""
    ).fetchone()
    assert row == (
        "double opt-in",
        "https://blog.example.com/post/1",
        "testclient",
        1,
        "testclient",
    )
    signup = ws.db.execute("SELECT form, agent, state FROM signups").fetchone()
    assert signup == ("sidebar", PERSON, "confirmed")


def test_tampered_and_expired_confirmations_change_nothing(ws, client, world):
    world.list("blog")
    client.post("/s/blog", data={"email": "new@example.com"})
    wait_until(lambda: signup_states(ws) != ["new"])  # the mailer made it a pending member
    nonce, created = ws.db.execute("SELECT nonce, created FROM signups").fetchone()
    secret = ws.settings.secret_key()
    good = confirm_token(secret, nonce, expiry(created))
    expired = confirm_token(secret, nonce, int(time.time()) - 1)
    forged = confirm_token(b"another-secret-of-16+", nonce, expiry(created))
    for token, code in (
        (good[:-1] + "x", 404),
        (forged, 404),
        (expired, 410),
        ("x.y.z", 404),
        ("aaaaaaaaaaaaaaaa.1.é", 404),
    ):
        assert client.get(f"/confirm/{token}").status_code == code, token
        assert client.post(f"/confirm/{token}").status_code == code, token
    assert statuses(ws, "new@example.com") == {"blog": "pending"}
    assert client.post(f"/confirm/{good}").status_code == 200
    assert statuses(ws, "new@example.com") == {"blog": "active"}


def test_an_unsubscribed_address_comes_back_only_by_confirming(ws, client, world, delivery):
    client.post(path_of(ws, delivery["token"]), data={"scope": "all"})
    client.post("/s/blog", data={"email": "ann@example.com"})
    assert statuses(ws)["blog"] == "unsubscribed"
    nonce, created = ws.db.execute("SELECT nonce, created FROM signups").fetchone()
    token = confirm_token(ws.settings.secret_key(), nonce, expiry(created))
    assert client.post(f"/confirm/{token}").status_code == 200
    assert statuses(ws) == {"blog": "active", "shop": "unsubscribed"}
    assert ws.db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0


def test_a_bounced_address_is_never_mailed_a_confirmation(ws, client, world, smtp):
    world.list("blog")
    suppress(ws.db, "bounced@example.com", "hard_bounce")
    ws.db.conn.commit()
    r = client.post("/s/blog", data={"email": "bounced@example.com"})
    assert r.status_code == 200 and "Check your inbox" in r.text
    client.post("/s/blog", data={"email": "fine@example.com"})
    wait_until(lambda: signup_states(ws) == ["not_mailed", "mailed"])
    assert list(smtp.recipients()) == ["fine@example.com"]


def test_the_honeypot_and_the_per_address_limit_stop_scripted_signups(ws, client, world):
    world.list("blog")
    r = client.post("/s/blog", data={"email": "bot@example.com", "website": "http://spam"})
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert signup_states(ws) == []
    codes = [
        client.post("/s/blog", data={"email": f"p{i}@example.com"}).status_code for i in range(6)
    ]
    assert codes == [200] * 4 + [429, 429]  # the honeypot hit counted too
    assert len(signup_states(ws)) == 4


def test_signup_errors_are_plain_and_say_what_to_do(ws, client, world):
    world.list("blog")
    assert client.get("/s/nolist").status_code == 404
    assert client.post("/s/nolist", data={"email": "a@example.com"}).status_code == 404
    r = client.post("/s/blog", data={"email": "not an address"})
    assert r.status_code == 400 and "not an email address" in r.text
    assert client.post("/s/blog", json={"email": "a@example.com"}).status_code == 415
    big = {"email": "a@example.com", "name": "x" * 20000}
    assert client.post("/s/blog", data=big).status_code == 413
    assert client.put("/s/blog").status_code == 405
    assert signup_states(ws) == []


def test_the_signup_page_has_the_form_and_a_hidden_honeypot(client, world):
    world.list("blog")
    r = client.get("/s/blog")
    assert r.status_code == 200
    assert (
        'name="email"' in r.text and 'name="website"' in r.text and 'aria-hidden="true"' in r.text
    )


# --- clicks ------------------------------------------------------------------------


def click_path(ws, token, url):
    return click_url("", ws.settings.secret_key(), token, link_id(url))


def clicks_of(ws):
    return ws.db.execute("SELECT kind, url FROM events ORDER BY id").fetchall()


OFFER_URL = "https://shop.example.com/l/field-guide"


def test_a_click_is_recorded_and_redirects_to_the_offers_tracked_link(ws, client, delivery):
    r = client.get(click_path(ws, delivery["token"], OFFER_URL))
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "https",
        "shop.example.com",
        "/l/field-guide",
    )
    query = parse_qs(location.query)
    assert query["utm_campaign"] == ["spring"] and query["utm_content"] == ["blog"]
    assert query["lk"] == [delivery["token"]]
    assert clicks_of(ws) == [("click", OFFER_URL)]


def test_head_scanners_and_instant_hits_are_recorded_as_bots(ws, client, world, delivery):
    path = click_path(ws, delivery["token"], OFFER_URL)
    assert client.head(path).status_code == 302
    bot = {"user-agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}
    assert client.get(path, headers=bot).status_code == 302
    fresh = world.deliver(
        world.campaign("now", started=None),
        "bob@example.com",
        "blog",
        sent_at=ws.db.execute("SELECT datetime('now')").fetchone()[0].replace(" ", "T") + "+00:00",
    )
    assert client.get(click_path(ws, fresh["token"], OFFER_URL)).status_code == 302
    assert [k for k, _ in clicks_of(ws)] == ["click_bot", "click_bot", "click_bot"]


def test_forged_links_and_links_not_in_the_offer_get_404_and_record_nothing(ws, client, delivery):
    good = click_path(ws, delivery["token"], OFFER_URL)
    elsewhere = click_path(ws, delivery["token"], "https://evil.example.net/")
    forged = click_url("", b"another-secret-of-16+", delivery["token"], link_id(OFFER_URL))
    for path in (
        good[:-2] + "zz",
        forged,
        elsewhere,
        "/c/short/x/y",
        click_path(ws, "aaaaaaaaaaaaaaaa", OFFER_URL),
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(good).status_code == 405
    assert clicks_of(ws) == []


def test_listkit_form_prints_a_form_that_posts_to_the_service(run):
    run("lists", "create", "blog")
    out = run("form", "blog", "--name", "sidebar").output
    assert '<form method="post" action="https://example.com/listkit/s/blog"' in out
    assert 'name="form" value="sidebar"' in out and 'name="website"' in out
    result = run("form", "nolist", ok=False)
    assert result.exit_code == 1 and "Error:" in result.output and "nolist" in result.output


def test_a_name_that_would_break_a_header_gets_no_confirmation(ws, client, world, smtp):
    world.list("blog")
    client.post("/s/blog", data={"email": "evil@example.com", "name": "Eve\r\nBcc: x@example.net"})
    client.post("/s/blog", data={"email": "fine@example.com", "name": "Fine"})
    wait_until(lambda: signup_states(ws) == ["failed", "mailed"])
    assert list(smtp.recipients()) == ["fine@example.com"]
    reply = ws.db.execute("SELECT mail_reply FROM signups WHERE state = 'failed'").fetchone()[0]
    assert "control character" in reply


def test_a_click_in_a_variants_message_goes_to_the_variants_link(ws, client, delivery):
    import shutil

    shutil.copytree(ws.offers_dir / "launch", ws.offers_dir / "other")
    toml = ws.offers_dir / "other" / "offer.toml"
    toml.write_text(toml.read_text().replace("/l/field-guide", "/l/other-book"))
    with ws.db.conn:
        ws.db.execute("UPDATE deliveries SET variant = 'other' WHERE id = ?", [delivery["id"]])
    r = client.get(click_path(ws, delivery["token"], "https://shop.example.com/l/other-book"))
    assert r.status_code == 302
    assert r.headers["location"].startswith("https://shop.example.com/l/other-book?")


# --- confirmations waiting when the service stopped --------------------------------


def waiting_signup(ws, email, state="new"):
    """A signup recorded before this service started (by an earlier run of it)."""
    from listkit.audience.signups import record_signup
    from listkit.db import immediate

    with immediate(ws.db):
        sid = record_signup(ws.db, "blog", email)
        ws.db.execute("UPDATE signups SET state = ? WHERE id = ?", [state, sid])
    return sid


def serve_once(ws):
    """Start the app (its lifespan included), let it settle, stop it."""
    app = create_app(ws)
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_until(lambda: not {"new", "sending"} & set(signup_states(ws)))
        assert c.get("/healthz").status_code == 200


def mailed_to(handler):
    return [rcpt for _mid, rcpt, _data in handler.messages]


def test_a_confirmation_waiting_when_the_service_stopped_is_mailed_at_start_up(ws, world, smtp):
    world.list("blog")
    waiting_signup(ws, "waited@example.com")
    serve_once(ws)
    assert mailed_to(smtp) == ["waited@example.com"]
    assert signup_states(ws) == ["mailed"]
    serve_once(ws)  # started again: mailed once, never twice
    assert mailed_to(smtp) == ["waited@example.com"]


def test_signups_not_to_be_mailed_never_hold_back_the_ones_after_them(ws, world, smtp):
    # More than a batch of signups that get no confirmation (members already),
    # then one that does: the mailer decides them all, not one batch per wake.
    world.list("blog", *(f"member{i}@example.com" for i in range(45)))
    for i in range(45):
        waiting_signup(ws, f"member{i}@example.com")
    waiting_signup(ws, "new@example.com")
    serve_once(ws)
    assert mailed_to(smtp) == ["new@example.com"]
    assert signup_states(ws) == ["not_mailed"] * 45 + ["mailed"]


def test_a_confirmation_cut_off_while_sending_is_never_mailed_again_but_marked_unknown(
    ws, world, smtp
):
    world.list("blog")
    waiting_signup(ws, "cut@example.com", state="sending")
    waiting_signup(ws, "next@example.com")
    serve_once(ws)
    assert mailed_to(smtp) == ["next@example.com"]
    assert signup_states(ws) == ["unknown", "mailed"]
    reply = ws.db.execute("SELECT mail_reply FROM signups WHERE state = 'unknown'").fetchone()[0]
    assert "may have been mailed" in reply
    # The person can sign up again, and that new signup is mailed.
    app = create_app(ws)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.post("/s/blog", data={"email": "cut@example.com"})
        wait_until(lambda: signup_states(ws) == ["unknown", "mailed", "mailed"])
    assert sorted(mailed_to(smtp)) == ["cut@example.com", "next@example.com"]


def test_a_confirmation_is_dkim_signed_and_its_envelope_is_the_bounce_address(ws, run, world, smtp):
    import json

    import dkim as dkimpy

    key = json.loads(run("dkim", "keygen", "--json", "--selector", "sel1").output)
    with (ws.root / ".env").open("a") as f:
        f.write(f"LISTKIT_DKIM_KEY={Path(key['key']).name}\nLISTKIT_DKIM_SELECTOR=sel1\n")
        f.write("LISTKIT_BOUNCE_ADDRESS=bounces@example.com\n")
    ws._settings = None
    dns = {f"{key['record_name']}.".encode(): key["record_value"].encode()}
    world.list("blog")
    app = create_app(ws)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/s/blog", data={"email": "new@example.com"}).status_code == 200
        wait_until(lambda: signup_states(ws) == ["mailed"])
    ((_mid, rcpt, data),) = smtp.messages
    assert rcpt == "new@example.com"
    assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert dkimpy.verify(data, dnsfunc=lambda name, timeout=5: dns.get(name))
    # VERP, as campaigns: the bounce address with the signup's own token.
    nonce = ws.db.execute("SELECT nonce FROM signups").fetchone()[0]
    assert smtp.senders == [f"bounces+{nonce}@example.com"]


def test_the_service_mails_confirmations_without_loading_the_campaign_sender():
    import subprocess
    import sys

    code = "import sys, listkit.web.pages; print('listkit.send.sender' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_pasted_signup_form_is_big_enough_for_a_finger_and_does_not_zoom_a_phone(run):
    # A blog's own styles may leave a form's fields at 21 px high and 13 px text:
    # too small to tap, and a phone zooms in on a field under 16 px. The snippet
    # carries its own sizes (checked in Chromium by `make pages-screenshots`).
    run("lists", "create", "blog")
    form = run("form", "blog").output
    fields = re.findall(r"<(?:input|button)\b[^>]*>", form)
    visible = [f for f in fields if 'type="hidden"' not in f and 'name="website"' not in f]
    assert len(visible) == 3
    for field in visible:
        style = re.search(r'style="([^"]*)"', field)
        assert style, field
        assert "min-height:44px" in style.group(1) and "font-size:16px" in style.group(1)


async def test_the_first_clicks_of_a_campaign_render_its_offer_once(ws, world, monkeypatch):
    import asyncio

    import httpx2

    from listkit.inbox import clicks

    readers = [f"p{i}@example.com" for i in range(8)]
    world.list("blog", *readers)
    cid = world.campaign("spring")
    tokens = [world.deliver(cid, email, "blog")["token"] for email in readers]
    renders = []
    real = clicks.links_as_rendered

    def counting(*args):
        renders.append(1)
        return real(*args)

    monkeypatch.setattr(clicks, "links_as_rendered", counting)
    transport = httpx2.ASGITransport(app=create_app(ws))
    async with httpx2.AsyncClient(transport=transport, base_url="http://listkit") as c:
        answers = await asyncio.gather(
            *(c.get(click_path(ws, t, OFFER_URL), headers={"user-agent": PERSON}) for t in tokens)
        )
    assert [a.status_code for a in answers] == [302] * 8
    assert all(a.headers["location"].startswith(OFFER_URL + "?") for a in answers)
    assert len(renders) == 1  # the others found the link stored
    assert clicks_of(ws) == [("click", OFFER_URL)] * 8


def test_serve_refuses_to_start_with_a_site_url_that_is_not_a_url(run, workspace):
    with (workspace / ".env").open("a") as f:
        f.write("LISTKIT_SITE_URL=blog.example.org\n")
    result = run("serve", "--port", "0", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: LISTKIT_SITE_URL must be an http(s) URL, not 'blog.example.org'\n"
    )


def test_two_pasted_forms_on_one_page_share_no_element_id_and_each_label_finds_its_field(run):
    run("lists", "create", "blog")
    run("lists", "create", "podcast")
    page = run("form", "blog").output + run("form", "blog").output + run("form", "podcast").output
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == 9 and len(set(ids)) == 9
    for snippet in re.findall(r"<form\b.*?</form>", page, re.S):
        mine = set(re.findall(r'\bid="([^"]+)"', snippet))
        assert set(re.findall(r'\bfor="([^"]+)"', snippet)) == mine
    assert all(i.startswith(("lk-blog-", "lk-podcast-")) for i in ids)
