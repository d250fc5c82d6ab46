"""End to end: a real `listkit serve` process on loopback, real SMTP, real messages.

A campaign goes out to an aiosmtpd server; the test reads the messages as a
reader's mail client would (the email package), uses their one-click
unsubscribe URL, their tracked link and a signup's confirmation link against
the running service, and checks what the next campaign does.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from email import message_from_bytes
from email.policy import default
from urllib.parse import parse_qs, urlsplit

import pytest

from listkit.db import unix
from listkit.mail.tracking import delivery_of
from listkit.send.sender import send_campaign
from listkit.workspace import Workspace
from tests.waiting import wait_until
from tests.web_server import serve

PUBLIC = "https://lists.example.com"  # LISTKIT_BASE_URL: the proxy in front of serve
PERSON = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def request(base, public_url, *, data=None, method=None, headers=None):
    """Send to the service what a client sends to LISTKIT_BASE_URL; (status, headers, body)."""
    url = base + public_url.removeprefix(PUBLIC)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    req.add_header("User-Agent", PERSON)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def message_to(handler, address, campaign_marker=None):
    for _mid, rcpt, data in handler.messages:
        if rcpt == address:
            msg = message_from_bytes(data, policy=default)
            if campaign_marker is None or campaign_marker in str(msg["List-Unsubscribe"]):
                return msg
    return None


@pytest.fixture
def setup(run, workspace, server):
    controller, handler = server
    env = (workspace / ".env").read_text()
    env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}?timeout=5")
    env = env.replace("https://example.com/listkit", PUBLIC)
    (workspace / ".env").write_text(env)
    run("lists", "create", "blog", "--title", "The Blog")
    for who in ("ann", "bob", "cat", "dan"):
        run("subscribers", "add", f"{who}@example.com", "--list", "blog")
    for slug in ("first", "second", "third"):
        (workspace / "campaigns" / f"{slug}.toml").write_text(
            'offer = "launch"\nlists = ["blog"]\nconcurrency = 1\n'
        )
    return handler


def send(workspace, slug, on_result=None):
    ws = Workspace(workspace)
    try:
        return send_campaign(ws, slug, on_result=on_result, batch=1)
    finally:
        ws.close()


def query(workspace, sql, params=()):
    ws = Workspace(workspace)
    try:
        return ws.db.execute(sql, list(params)).fetchall()
    finally:
        ws.close()


def test_unsubscribe_click_and_signup_through_a_running_service(workspace, setup):
    handler = setup
    with serve(workspace) as base:
        # A signup before the first campaign: pending, so never mailed a campaign.
        status, _h, body = request(
            base,
            PUBLIC + "/s/blog",
            data=b"email=new%40example.com&name=New",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and "Check your inbox" in body
        confirmation = handler.wait_for(lambda: message_to(handler, "new@example.com"))
        assert confirmation["Subject"] == "Please confirm your subscription to The Blog"

        assert send(workspace, "first").totals["sent"] == 4
        assert message_to(handler, "new@example.com", "/u/") is None

        # One-click unsubscribe, as Gmail does it: POST the body to the header's URL.
        ann = message_to(handler, "ann@example.com")
        assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = str(ann["List-Unsubscribe"]).strip("<>")
        for _ in range(2):
            status, headers, body = request(
                base,
                url,
                data=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert status == 200 and "You are unsubscribed" in body
        assert query(workspace, "SELECT kind FROM events") == [("unsubscribe",)]

        # The tracked link: a redirect to the offer's own link with the delivery's token.
        bob = message_to(handler, "bob@example.com")
        text = bob.get_body(("plain",)).get_content()
        click = next(w for w in text.split() if "/c/" in w)
        status, headers, _ = request(base, click)
        assert status == 302  # right after sending: a scanner's hit, not counted
        # The reader opens it later than a scanner would.
        bob_token = bob["Message-ID"].strip("<>").split(".")[0]
        ws = Workspace(workspace)
        with ws.db.conn:
            ws.db.execute(
                "UPDATE deliveries SET sent_unix = ? WHERE id = ?",
                [
                    unix("2026-01-01T00:00:00+00:00"),
                    delivery_of(ws.settings.secret_key(), bob_token),
                ],
            )
        ws.close()
        status, headers, _ = request(base, click)
        assert status == 302
        location = urlsplit(headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            "https://shop.example.com/l/field-guide"
        )
        assert parse_qs(location.query)["lk"] == [bob_token]
        assert query(workspace, "SELECT kind FROM events WHERE kind LIKE 'click%' ORDER BY id") == [
            ("click_bot",),
            ("click",),
        ]

        # An unsubscribe that arrives while the second campaign is sending is honoured.
        cat_url = str(message_to(handler, "cat@example.com")["List-Unsubscribe"]).strip("<>")
        done = []

        def on_result(result):
            done.append(result)
            if len(done) == 1:
                request(
                    base,
                    cat_url,
                    data=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )

        before = len(handler.messages)
        summary = send(workspace, "second", on_result=on_result)
        second = [rcpt for _m, rcpt, _d in handler.messages[before:]]
        assert "ann@example.com" not in second and "new@example.com" not in second
        assert second[0] == "bob@example.com" and "cat@example.com" not in second
        assert summary.totals["sent"] == len(second) == 2
        skipped = query(
            workspace,
            "SELECT s.email, d.state, d.last_reply FROM deliveries d "
            "JOIN campaigns c ON c.id = d.campaign_id JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE c.slug = 'second' AND d.state != 'sent'",
        )
        # Claimed before the unsubscribe arrived, it is refused before its content
        # goes out; claimed after, it is skipped at the claim.
        assert skipped in (
            [
                (
                    "cat@example.com",
                    "skipped",
                    "unsubscribed or suppressed while the campaign was sending",
                )
            ],
            [("cat@example.com", "skipped", "suppressed or unsubscribed before sending")],
        )

        # The signup confirms: GET shows a button, only the POST makes it active.
        link = next(
            w for w in confirmation.get_body(("plain",)).get_content().split() if "/confirm/" in w
        )
        status, _h, body = request(base, link)
        assert status == 200 and "Confirm my subscription" in body
        assert query(
            workspace,
            "SELECT status FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id "
            "WHERE s.key = 'new@example.com'",
        ) == [("pending",)]
        status, _h, body = request(base, link, data=b"")
        assert status == 200 and "You are subscribed" in body

        before = len(handler.messages)
        send(workspace, "third")
        third = sorted(rcpt for _m, rcpt, _d in handler.messages[before:])
        assert "new@example.com" in third and "ann@example.com" not in third
        assert "cat@example.com" not in third

    log = (workspace / "serve.log").read_text()
    assert bob_token not in log and "/u/{token}/{sig}" in log


def sign_up(base, email, forwarded_for):
    return request(
        base,
        PUBLIC + "/s/blog",
        data=f"email={email}".encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Forwarded-For": forwarded_for,
        },
    )[0]


def test_x_forwarded_for_is_believed_only_from_the_proxies_serve_is_told_of(workspace, setup):
    handler = setup
    stranger = "stranger@example.net"

    def settled():
        return query(workspace, "SELECT COUNT(*) FROM signups WHERE state IN ('new', 'sending')")

    with serve(workspace) as base:  # no proxy named: the peer is the client
        assert sign_up(base, "direct%40example.net", "203.0.113.7") == 200
        wait_until(lambda: settled() == [(0,)])
    assert query(workspace, "SELECT ip FROM signups") == [("127.0.0.1",)]

    # Behind a proxy on this machine: twelve signups of one stranger's address,
    # from four client addresses the proxy names, in a second or two.
    with serve(workspace, "--forwarded-allow-ips", "127.0.0.1") as base:
        codes = [sign_up(base, "stranger%40example.net", f"198.51.100.{i % 4}") for i in range(12)]
        assert codes == [200] * 12
        wait_until(lambda: settled() == [(0,)])
    assert [rcpt for _m, rcpt, _d in handler.messages].count(stranger) == 1
    ips = query(workspace, "SELECT ip FROM signups WHERE email = ? ORDER BY id", [stranger])
    assert [ip for (ip,) in ips] == [f"198.51.100.{i % 4}" for i in range(12)]
    assert query(
        workspace,
        "SELECT consent_ip FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id "
        "WHERE s.key = ?",
        [stranger],
    ) == [("198.51.100.0",)]
