"""`listkit backup` while a real send and a real `listkit serve` work, both killed
with SIGKILL: every copy is whole, and holds every event acknowledged before it
began."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from listkit.db import migrations
from listkit.mail.tracking import click_url, row_token, unsubscribe_url
from listkit.send.sender import send_campaign
from listkit.workspace import Workspace
from tests.test_send_processes import descendants, listkit
from tests.web_server import serve
from tests.world import tokens as tokens_of

PUBLIC = "https://lists.example.com"
HOOK_SECRET = "listkit-hook-secret-0123456789"
READERS = 360


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def status_of(url: str, *, data: bytes | None = None, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    req.add_header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0")
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Load:
    """Unsubscribes, clicks and sales sent to serve, each remembered with the
    moment its answer (2xx; a click's 302) arrived."""

    def __init__(self, base: str, secret: bytes, tokens: list[str], link: str):
        self.base, self.secret, self.tokens, self.link = base, secret, tokens, link
        self.acked: list[tuple[float, str, str]] = []  # (when, kind, token or order id)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, n: int) -> tuple[str, str, int]:
        token = self.tokens[n // 3 % len(self.tokens)]
        if n % 3 == 0:
            url = unsubscribe_url(PUBLIC, self.secret, token).removeprefix(PUBLIC)
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            return (
                "unsubscribe",
                token,
                status_of(self.base + url, data=b"List-Unsubscribe=One-Click", headers=form),
            )
        if n % 3 == 1:
            url = click_url(PUBLIC, self.secret, token, self.link).removeprefix(PUBLIC)
            return "click", token, status_of(self.base + url)
        order = f"order-{n}"
        sale = {"order_id": order, "amount": "29.00", "currency": "EUR", "token": token}
        body = json.dumps({**sale, "at": "2026-12-01T10:00:00Z"}).encode()
        t = int(time.time())
        digest = hmac.new(HOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256)
        headers = {"X-Listkit-Signature": f"t={t},v1={digest.hexdigest()}"}
        return "sale", order, status_of(self.base + "/hooks/sale", data=body, headers=headers)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 3 * len(self.tokens):
            try:
                kind, what, code = self._one(n)
            except OSError:  # serve was killed: nothing more is acknowledged
                return
            if 200 <= code < 300 or (kind == "click" and code == 302):  # a click redirects
                self.acked.append((time.monotonic(), kind, what))
            n += 1


def kill_serve(workspace: Path) -> None:
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and str(workspace).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


def found(path: Path, secret: bytes) -> dict[str, set[str]]:
    """The events a copy holds, as the load named them (by token); and its integrity."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        unsubscribed = conn.execute(
            """SELECT d.id, d.legacy_token FROM events e JOIN deliveries d ON d.id = e.delivery_id
               JOIN memberships m ON m.subscriber_id = d.subscriber_id AND m.list_id = d.list_id
               WHERE e.kind = 'unsubscribe' AND m.status = 'unsubscribed'"""
        ).fetchall()
        clicked = conn.execute(
            "SELECT d.id, d.legacy_token FROM events e JOIN deliveries d ON d.id = e.delivery_id "
            "WHERE e.kind LIKE '%click%'"
        ).fetchall()
        sold = conn.execute("SELECT order_id FROM sales").fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        steps = conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    finally:
        conn.close()
    return {
        "unsubscribe": {row_token(secret, *row) for row in unsubscribed},
        "click": {row_token(secret, *row) for row in clicked},
        "sale": {o for (o,) in sold},
        "integrity": {i for (i,) in integrity},
        "steps": {s for (s,) in steps},
    }


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the serve process in /proc")
def test_backups_taken_under_load_and_sigkill_hold_every_acknowledged_event(
    run, workspace, tmp_path, server
):
    controller, handler = server
    env = (workspace / ".env").read_text()
    env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}?timeout=5")
    env = env.replace("https://example.com/listkit", PUBLIC)
    (workspace / ".env").write_text(env + f"LISTKIT_WEBHOOK_SECRET={HOOK_SECRET}\n")
    readers = tmp_path / "readers.csv"
    readers.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(READERS)))
    run("lists", "create", "blog")
    run("subscribers", "import", str(readers), "--list", "blog")
    for slug, extra in (("first", ""), ("t", "rate = 60\n")):
        (workspace / "campaigns" / f"{slug}.toml").write_text(
            f'offer = "launch"\nlists = ["blog"]\nconcurrency = 2\n{extra}'
        )
    ws = Workspace(workspace)
    try:
        send_campaign(ws, "first")
        secret = ws.settings.secret_key()
        tokens = list(tokens_of(ws.db, "first").values())
    finally:
        ws.close()
    text = handler.messages[0][2].decode()
    link = re.search(r"/c/[A-Za-z0-9_-]+/([A-Za-z0-9_-]+)/", text).group(1)

    copies: list[tuple[float, Path]] = []
    with serve(workspace) as base:
        load = Load(base, secret, tokens, link)
        sender = listkit(workspace, "send", "t", "--yes")
        load.thread.start()
        deadline = time.monotonic() + 4
        for n in range(7):  # backups one after another; the kills land in the last
            dest = tmp_path / f"copy-{n}.db"
            began = time.monotonic()
            backup = listkit(workspace, "backup", str(dest))
            last = n == 6 or time.monotonic() > deadline
            if last:
                time.sleep(0.2)
                sending = sender.poll() is None
                sender.send_signal(signal.SIGKILL)
                kill_serve(workspace)
            output, _ = backup.communicate(timeout=60)
            assert backup.returncode == 0, output
            copies.append((began, dest))
            if last:
                break
        sender.wait()
        load.stop.set()
        load.thread.join(30)

    assert sending, "the send ended before it could be killed"
    assert len(copies) >= 2
    kinds = {kind for _at, kind, _what in load.acked}
    assert kinds == {"unsubscribe", "click", "sale"}, load.acked[:5]
    known = {m.name for m in migrations._migrations}
    for began, dest in copies:
        held = found(dest, secret)
        assert held["integrity"] == {"ok"}, dest
        assert held["steps"] == known, dest
        for at, kind, what in load.acked:
            if at < began:
                assert what in held[kind], (dest.name, kind, what)

    # Restore the last copy and use it: it opens, migrates and reports.
    for name in ("listkit.db", "listkit.db-wal", "listkit.db-shm", "listkit.db-marks"):
        (workspace / name).unlink(missing_ok=True)
    (workspace / "listkit.db").write_bytes(copies[-1][1].read_bytes())
    report = json.loads(run("report", "--by", "campaign", "--json").output)
    assert report
    ws = Workspace(workspace)
    try:
        claimed = ws.db.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'sending' AND phase IS NOT 'data'"
        ).fetchone()[0]
    finally:
        ws.close()
    assert claimed == 0  # what a send had in flight counts as possibly sent: never resent
