"""Sequences and `listkit serve`: the lead magnet mailed within seconds of a
confirmation through the real form, and a purchase webhook ending selling steps."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listkit.send.sequence_due import send_sequences
from listkit.send.sequence_files import sync_all
from listkit.workspace import Workspace
from tests.test_serve_end_to_end import PUBLIC, message_to, request
from tests.web_server import serve

EXAMPLES = Path(__file__).resolve().parent.parent / "sequences"


@pytest.fixture
def blog(run, workspace, server):
    controller, handler = server
    env = (workspace / ".env").read_text()
    env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    env = env.replace("https://example.com/listkit", PUBLIC)
    (workspace / ".env").write_text(env)
    run("lists", "create", "blog", "--title", "The Blog")
    (workspace / "sequences").mkdir()
    text = (EXAMPLES / "welcome.toml").read_text()
    # Every reader of this test gets the sequence (none held out).
    (workspace / "sequences" / "welcome.toml").write_text(
        text.replace("holdout = 0.1", "holdout = 0")
    )
    ws = Workspace(workspace)
    try:
        sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    finally:
        ws.close()
    return handler


def test_a_signup_confirmed_through_the_real_form_gets_the_lead_magnet_within_5_seconds(
    workspace, blog
):
    handler = blog
    with serve(workspace) as base:
        status, _h, body = request(
            base,
            PUBLIC + "/s/blog",
            data=b"email=reader%40example.com&name=Rea+Der",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and "Check your inbox" in body
        confirmation = handler.wait_for(lambda: message_to(handler, "reader@example.com"))
        link = next(
            w for w in confirmation.get_body(("plain",)).get_content().split() if "/confirm/" in w
        )
        status, _h, body = request(base, link, data=b"")
        assert status == 200 and "You are subscribed" in body
        confirmed = time.monotonic()
        magnet = handler.wait_for(
            lambda: [
                data
                for _m, rcpt, data in handler.messages
                if rcpt == "reader@example.com" and b"Your Selling Checklist" in data
            ],
            seconds=5,
        )
        assert time.monotonic() - confirmed < 5
        assert len(magnet) == 1
        # The same confirmation again changes nothing and mails nothing more.
        request(base, link, data=b"")
    ws = Workspace(workspace)
    try:
        rows = ws.db.execute(
            """SELECT c.slug, d.state FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
               WHERE c.sequence_id IS NOT NULL"""
        ).fetchall()
        enrolled = ws.db.execute("SELECT state, step, next_step FROM enrollments").fetchall()
    finally:
        ws.close()
    assert rows == [("welcome/download", "sent")]
    assert enrolled == [("active", "download", "story")]
    magnets = [d for _m, r, d in handler.messages if b"Your Selling Checklist" in d]
    assert len(magnets) == 1


SECRET = "sequence-test-webhook-secret-0123456789"


def signed_sale(base: str, body: dict) -> int:
    raw = json.dumps(body).encode()
    t = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        base + "/hooks/sale",
        data=raw,
        headers={"Content-Type": "application/json", "X-Listkit-Signature": f"t={t},v1={mac}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def tick(workspace: Path, at: datetime) -> None:
    ws = Workspace(workspace)
    try:
        send_sequences(ws, at=at)
    finally:
        ws.close()


def test_a_purchase_webhook_through_serve_stops_the_next_selling_step_of_that_reader(
    run, workspace, blog
):
    handler = blog
    with (workspace / ".env").open("a") as f:
        f.write(f"LISTKIT_WEBHOOK_SECRET={SECRET}\n")
    t0 = datetime.now(UTC)
    for who in ("ann", "bob"):
        run("subscribers", "add", f"{who}@example.com", "--list", "blog")
    tick(workspace, t0 + timedelta(minutes=1))
    tick(workspace, t0 + timedelta(days=2, minutes=2))
    assert len(handler.messages) == 4  # download and story, to each
    with serve(workspace) as base:
        sale = {
            "order_id": "W-1",
            "amount": "29.00",
            "currency": "USD",
            "at": (t0 + timedelta(days=3)).isoformat(),
            "email": "bob@example.com",
            "product": "The Field Guide to Selling (ebook)",
        }
        assert signed_sale(base, sale) == 200
    tick(workspace, t0 + timedelta(days=5, minutes=3))
    offers = [r for _m, r, d in handler.messages if b"the Field Guide is out" in d]
    assert offers == ["ann@example.com"]
    out = run("sequences", "show", "welcome", "--json").output
    offer_step = next(s for s in json.loads(out) if s["step"] == "offer")
    assert offer_step["messages"] == {"sent": 1, "skipped": 1}
