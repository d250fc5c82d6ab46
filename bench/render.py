"""Benchmark: messages built per second, listkit's ``mime`` path against the stdlib.

In the same run, for the same rendered parts (subject, display name, text and
HTML bodies, headers) of N personalised messages:

- baseline: ``email.message.EmailMessage`` with ``set_content`` +
  ``add_alternative`` and ``as_bytes()`` (the modern stdlib API);
- listkit mime: ``MessageBuilder.build`` (header checks included);
- listkit compose: ``Composer.compose``, the whole per-recipient path the
  sender runs (Jinja rendering of subject, text and HTML, tracked links,
  footer checks, MIME assembly), for reference.

Goal: the mime path at least 5x the baseline.

    .venv/bin/python bench/render.py [--messages 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from listkit.config import load_settings
from listkit.mail.compose import Composer
from listkit.mail.mime import MessageBuilder, Parts
from listkit.mail.offers import load_offer
from listkit.mail.tracking import new_token
from listkit.workspace import init_workspace

NAMES = ["Ann Lee", "Zoë Müller", "山田 太郎", "José Núñez", "Chris O'Neil", "Priya 😀"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        init_workspace(root)
        composer = Composer(
            load_offer(root / "offers", "launch"),
            load_settings(root),
            campaign="launch",
            offers_dir=root / "offers",
        )
        subscribers = [
            {
                "id": i,
                "email": f"reader{i}@example.com",
                "key": f"reader{i}@example.com",
                "name": NAMES[i % len(NAMES)],
                "fields": {},
            }
            for i in range(n)
        ]
        tokens = [new_token() for _ in range(n)]

        start = time.perf_counter()
        composed = [
            composer.compose(subscriber=s, list_slug="blog", list_title="Blog", token=t)
            for s, t in zip(subscribers, tokens, strict=True)
        ]
        compose_s = time.perf_counter() - start

    sender = ("The Field Guide", "hello@shop.example.com")
    parts = [
        Parts(
            to_address=s["email"],
            to_name=s["name"],
            subject=c.subject,
            text=c.text,
            html=c.html,
            message_id=c.message_id,
            unsubscribe_url=f"https://example.com/u/{t}/sig",
        )
        for s, c, t in zip(subscribers, composed, tokens, strict=True)
    ]

    start = time.perf_counter()
    builder = MessageBuilder(
        sender_name=sender[0], sender_address=sender[1], list_id="blog.shop.example.com"
    )
    ours = [builder.build(p) for p in parts]
    mime_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs = []
    for p in parts:
        msg = EmailMessage()
        msg["From"] = f"{sender[0]} <{sender[1]}>"
        msg["To"] = f"{p.to_name} <{p.to_address}>"
        msg["Subject"] = p.subject
        msg["Date"] = format_datetime(time_now())
        msg["Message-ID"] = p.message_id
        msg["List-Id"] = "<blog.shop.example.com>"
        msg["List-Unsubscribe"] = f"<{p.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(p.text, cte="quoted-printable")
        msg.add_alternative(p.html, subtype="html", cte="quoted-printable")
        theirs.append(msg.as_bytes())
    stdlib_s = time.perf_counter() - start

    avg_ours = sum(map(len, ours)) / n
    avg_theirs = sum(map(len, theirs)) / n
    print(
        f"{n:,} messages, text + HTML; average size listkit {avg_ours:,.0f} B, "
        f"stdlib {avg_theirs:,.0f} B"
    )
    print(f"{'':34}{'msgs/s':>10}{'µs/msg':>10}")
    print(f"{'stdlib EmailMessage (baseline)':34}{n / stdlib_s:10,.0f}{stdlib_s / n * 1e6:10.0f}")
    print(f"{'listkit mime.MessageBuilder':34}{n / mime_s:10,.0f}{mime_s / n * 1e6:10.0f}")
    print(
        f"{'listkit Composer.compose (full)':34}{n / compose_s:10,.0f}{compose_s / n * 1e6:10.0f}"
    )
    print(f"ratio mime / stdlib: {stdlib_s / mime_s:.1f}x   (goal >= 5x)")
    print(f"ratio full compose (render + mime) / stdlib mime alone: {stdlib_s / compose_s:.1f}x")


def time_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


if __name__ == "__main__":
    main()
