"""Benchmark: `listkit bounces import` of an mbox of Postfix bounces against reading it.

Builds a workspace with N sent deliveries and an mbox of N Postfix
non-delivery reports (the corpus's shape, one per delivery, each with its own
VERP token), then in the same run, on the same files, best of several runs:

- baseline: the stdlib reading every message of the mbox (``mailbox.mbox`` and
  ``email.message_from_bytes``), which any bounce reader has to do;
- listkit: ``bounces.import_path`` (read, parse, classify, match, record and
  suppress, in one transaction), on a fresh copy of the database each round.

    .venv/bin/python bench/bounces.py [--messages 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listkit.inbox.bounces import import_path  # noqa: E402
from listkit.mail.tracking import delivery_token  # noqa: E402
from listkit.workspace import Workspace, init_workspace  # noqa: E402

TEMPLATE = (ROOT / "tests" / "fixtures" / "bounces" / "postfix_user_unknown.eml").read_bytes()


def build(root: Path, n: int) -> Path:
    init_workspace(root / "ws")
    ws = Workspace(root / "ws")
    db = ws.db
    now = "2026-11-30T09:00:00+00:00"
    sent = int(time.time())
    with db.conn:
        db.execute("INSERT INTO lists (id, slug, created) VALUES (1, 'blog', ?)", [now])
        db.execute(
            "INSERT INTO campaigns (id, slug, offer, state, created, started) "
            "VALUES (1, 'launch', 'launch', 'done', ?, ?)",
            [now, now],
        )
        db.conn.executemany(
            "INSERT INTO subscribers (id, email, key, created) VALUES (?, ?, ?, ?)",
            [(i, f"r{i}@example.net", f"r{i}@example.net", now) for i in range(n)],
        )
        db.conn.executemany(
            "INSERT INTO memberships (list_id, subscriber_id, created) VALUES (1, ?, ?)",
            [(i, now) for i in range(n)],
        )
        db.conn.executemany(
            """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state, sent_unix)
               VALUES (1, ?, 1, 'sent', ?)""",
            [(i, sent) for i in range(n)],
        )
    secret = ws.settings.secret_key()
    tokens = [
        delivery_token(secret, did)
        for (did,) in db.execute("SELECT id FROM deliveries ORDER BY subscriber_id")
    ]
    ws.close()
    box = mailbox.mbox(root / "bounces.mbox")
    box.lock()
    for i, token in enumerate(tokens):
        box.add(
            TEMPLATE.replace(b"postfixtokenaaaa", token.encode())
            .replace(b"nobody@example.net", f"r{i}@example.net".encode())
            .replace(b"20261130091403.", f"{i}.".encode())
        )
    box.flush()
    box.unlock()
    box.close()
    return root / "bounces.mbox"


def baseline(path: Path) -> int:
    box = mailbox.mbox(path, factory=None, create=False)
    n = 0
    for key in box.iterkeys():
        email.message_from_bytes(box.get_bytes(key), policy=email.policy.compat32)
        n += 1
    box.close()
    return n


def listkit(root: Path, path: Path) -> int:
    work = root / "round"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root / "ws", work)
    ws = Workspace(work)
    try:
        handled = import_path(ws, str(path))
    finally:
        ws.close()
    suppressed = (
        sqlite3.connect(work / "listkit.db")
        .execute("SELECT COUNT(*) FROM suppressions")
        .fetchone()[0]
    )
    if suppressed != len(handled):
        raise SystemExit(f"expected {len(handled)} suppressions, found {suppressed}")
    return len(handled)


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listkit-bench-bounces-") as tmp:
        root = Path(tmp)
        path = build(root, args.messages)
        base, ours = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            base.append(best(lambda: baseline(path), 1))
            ours.append(best(lambda: listkit(root, path), 1))
        b, o = min(base), min(ours)
        n = args.messages
        print(f"messages: {n}")
        print(f"baseline (stdlib read + parse): {b:.3f} s ({n / b:,.0f} messages/s)")
        print(f"listkit bounces import:         {o:.3f} s ({n / o:,.0f} messages/s)")
        print(f"ratio listkit / baseline: {o / b:.2f}")


if __name__ == "__main__":
    main()
